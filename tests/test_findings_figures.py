"""Figures of the findings (issue 4 "Pictures"): galleries, histograms per group, the t-SNE map, the HTML page.
Small synthetic tables; t-SNE on <= 150 points."""
from __future__ import annotations

import base64
import io
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from influencegate.report import (dataset_images, duplicate_gallery, embedding_map, group_histograms, html_summary,
                                  outlier_gallery, placeholder, render_all)


@pytest.fixture(autouse=True)
def one_openmp_thread():
    """t-SNE's OpenMP threads busy-wait on a shared, oversubscribed machine (a 150-point map: ~3 s on one
    thread, over a minute on two contended ones); one thread keeps these tests fast everywhere. Restored
    afterwards."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def table_with_findings(n: int = 120, seed: int = 0) -> pd.DataFrame:
    """A scores table with the findings' columns: two duplicate groups, three outliers, a group column."""
    rng = np.random.default_rng(seed)
    log_inf = rng.normal(size=n)
    table = pd.DataFrame({"sample_id": [f"img/{i:04d}.png" for i in range(n)], "log_influence": log_inf,
                          "influence": np.exp(log_inf)})
    table["influence_rank"] = table["influence"].rank(ascending=False, method="first").astype(int)
    table["influence_percentile"] = 100.0 * (n - table["influence_rank"]) / (n - 1)
    table["outlier_score"] = rng.normal(size=n)
    table.loc[[5, 15, 19], "outlier_score"] = [9.0, 7.0, 5.0]
    table["is_outlier"] = table["outlier_score"] > 3.5
    table["duplicate_group"] = -1
    table["is_duplicate"] = False
    table["duplicate_of"] = None
    for gid, members in enumerate(([3, 10, 11], [12, 17])):
        table.loc[members, "duplicate_group"] = gid
        table.loc[members, "duplicate_of"] = table.loc[members[0], "sample_id"]
        table.loc[members[1:], "is_duplicate"] = True
    table["site"] = np.where(np.arange(n) % 3 == 0, "north", "south")
    table["error"] = None
    return table


def pictures(n: int = 120, seed: int = 0) -> dict[str, np.ndarray]:
    """images_by_id as a mapping: distinct random 1 x 8 x 8 images, pixels in [0, 1]."""
    rng = np.random.default_rng(seed)
    return {f"img/{i:04d}.png": rng.random((1, 8, 8)).astype(np.float32) for i in range(n)}


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def is_placeholder(image: Image.Image) -> bool:
    """The placeholder's size and nearly all white."""
    return image.size == (480, 120) and (pixels(image) > 240).mean() > 0.9


def coloured(image: Image.Image) -> int:
    """Pixels with a clear colour (not white, grey or black): plotted data."""
    p = pixels(image)
    return int((p.max(axis=2) - p.min(axis=2) > 60).sum())


def test_duplicate_gallery_rows_per_group_and_changes_with_input():
    table, images = table_with_findings(), pictures()
    gallery = duplicate_gallery(table, images)
    assert gallery.mode == "RGB" and not is_placeholder(gallery)
    # two rows (groups of 3 and 2 members, cells of 64 + 4 px): taller than one row, at least 3 cells wide
    one_group = duplicate_gallery(table.assign(duplicate_group=np.where(table["duplicate_group"] == 0, 0, -1)), images)
    assert gallery.size[0] == one_group.size[0] >= 3 * 68 + 4 and gallery.size[1] > one_group.size[1]
    # other images in the groups -> other pixels; a callable works like a mapping
    other = {k: 1.0 - v for k, v in images.items()}
    assert not np.array_equal(pixels(gallery), pixels(duplicate_gallery(table, other)))
    assert np.array_equal(pixels(gallery), pixels(duplicate_gallery(table, images.__getitem__)))
    capped = duplicate_gallery(table, images, max_groups=1)
    assert capped.size[1] < gallery.size[1]


def test_duplicate_gallery_canonical_first_and_missing_images_grey():
    table, images = table_with_findings(), pictures()
    images["img/0003.png"] = np.ones((1, 8, 8), np.float32)  # the canonical member of group 0: white
    images.pop("img/0010.png")  # the copies without an image: drawn grey, no crash
    images.pop("img/0011.png")
    gallery = pixels(duplicate_gallery(table.assign(duplicate_group=np.where(table["duplicate_group"] == 0, 0, -1)),
                                       images, cell=32))
    top = 20 + 18 + 4  # page title, row title, margin
    first_tile, second_tile = gallery[top:top + 32, 4:36], gallery[top:top + 32, 40:72]
    assert (first_tile == 255).all()
    assert (np.abs(second_tile - 128) <= 1).all()


def test_galleries_and_histograms_placeholders_on_empty_input():
    table, images = table_with_findings(), pictures()
    for image, words in ((duplicate_gallery(table.assign(duplicate_group=-1), images), "no near-duplicate"),
                         (duplicate_gallery(table.drop(columns=["duplicate_group"]), images), "duplicate_group"),
                         (outlier_gallery(table.drop(columns=["outlier_score"]), images), "outlier_score"),
                         (outlier_gallery(table.assign(outlier_score=np.nan), images), "no sample"),
                         (group_histograms(table, "race"), "race"),
                         (group_histograms(table.assign(site=None), "site"), "no scored sample")):
        assert image.mode == "RGB" and is_placeholder(image), words
    assert np.array_equal(pixels(placeholder("x")), pixels(placeholder("x")))
    assert not np.array_equal(pixels(placeholder("x")), pixels(placeholder("y")))


def test_outlier_gallery_shows_the_top_scores_first():
    table, images = table_with_findings(), pictures()
    images["img/0005.png"] = np.zeros((1, 8, 8), np.float32)  # the highest outlier score: black
    gallery = outlier_gallery(table, images, k=6, columns=3, cell=32)
    assert gallery.mode == "RGB" and gallery.size[0] == 3 * 36 + 4
    first_tile = pixels(gallery)[18 + 4: 18 + 4 + 32, 4:36]
    assert (first_tile == 0).all()
    assert gallery.size[1] > outlier_gallery(table, images, k=3, columns=3, cell=32).size[1]


def test_group_histograms_reflect_the_groups():
    table = table_with_findings()
    a = group_histograms(table, "site")
    assert a.mode == "RGB" and a.size[0] > 400 and coloured(a) > 500
    shifted = table.assign(log_influence=table["log_influence"] + np.where(table["site"] == "north", 2.0, 0.0))
    assert not np.array_equal(pixels(a), pixels(group_histograms(shifted, "site")))


def test_embedding_map_seeded_marked_and_subsampled():
    table = table_with_findings(n=150)
    emb = np.random.default_rng(1).normal(size=(150, 12)).astype(np.float32)
    a = embedding_map(emb, table, seed=0)
    assert a.mode == "RGB" and a.size[0] > 400 and coloured(a) > 1000
    assert np.array_equal(pixels(a), pixels(embedding_map(emb, table, seed=0)))  # seeded: reproducible

    def red(image: Image.Image) -> int:
        p = pixels(image)
        return int(((p[..., 0] > 200) & (p[..., 1] < 60) & (p[..., 2] < 60)).sum())

    sub = embedding_map(emb, table, seed=0, max_points=60)  # the 3 outliers are kept in the subset
    assert not np.array_equal(pixels(sub), pixels(a)) and red(sub) > 20 and red(a) > 20  # circled in red
    assert red(embedding_map(emb, table.drop(columns=["is_outlier"]), seed=0, max_points=60)) < red(sub) / 4
    ids = list(table["sample_id"][::-1])
    assert embedding_map(emb[::-1], table, sample_ids=ids, seed=0, max_points=60).mode == "RGB"
    assert is_placeholder(embedding_map(emb[:3], table.iloc[:3]))
    with pytest.raises(ValueError, match="embeddings"):
        embedding_map(emb[:10], table)  # 10 embeddings for 150 rows: the alignment rule's clear error


def test_html_summary_embeds_images_and_escaped_text():
    table, images = table_with_findings(), pictures()
    figures = {"duplicate groups": duplicate_gallery(table, images),
               "log_influence by site": group_histograms(table, "site")}
    page = html_summary("Audit <digits>", {"duplicate_fraction": 0.0123456, "approved": True},
                        {"Fairness": "site: shares differ & p < 0.01.\n\nSecond paragraph."}, figures)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "Audit &lt;digits&gt;" in page and "<digits>" not in page
    assert "shares differ &amp; p &lt; 0.01." in page and page.count("<p>") == 2
    assert "0.01235" in page and "approved" in page
    blobs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(blobs) == 2
    for blob, image in zip(blobs, figures.values()):
        decoded = Image.open(io.BytesIO(base64.b64decode(blob)))
        assert decoded.size == image.size and np.array_equal(pixels(decoded.convert("RGB")), pixels(image))
    assert "http" not in page.replace("charset", "")  # self-contained: nothing fetched


def test_dataset_images_from_an_image_dataset(digits):
    lookup = dataset_images(digits)
    first = lookup(digits.sample_ids[0])
    assert first.shape == (1, 8, 8) and 0.0 <= first.min() and first.max() <= 1.0 and first.max() > 0.5
    with pytest.raises(KeyError):
        lookup("not/there.png")
    table = table_with_findings(n=20).assign(sample_id=digits.sample_ids[:20])
    assert not is_placeholder(duplicate_gallery(table, lookup))


def test_render_all_on_a_dataset_and_its_encoder(digits):
    import torch

    from influencegate.models import SmallCNN

    ds = digits.subset(digits.sample_ids[:80])
    table = table_with_findings(n=80).assign(sample_id=ds.sample_ids)
    torch.manual_seed(0)
    figures = render_all(ds, SmallCNN(), table, groups=["site"], max_points=60)
    assert set(figures) == {"duplicate_gallery", "outlier_gallery", "group_histograms", "embedding_map"}
    assert all(f.mode == "RGB" and not is_placeholder(f) for f in figures.values())
    two = render_all(ds, SmallCNN(), table.assign(zone=table["site"]), groups=["site", "zone"], max_points=60)
    assert two["group_histograms"].size[1] > figures["group_histograms"].size[1]  # one histogram per column
    assert "group_histograms" not in render_all(ds, SmallCNN(), table, max_points=60)  # no group column: not audited
