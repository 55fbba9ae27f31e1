"""Findings of an appended version (findings/appended.py, workflows/version_state.py): only the pairs and rows the
new samples change are recomputed, against the full searches as references."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits
from test_findings_views import planted_set

from influencegate.findings.appended import Previous, knn_appended, touching_tiles
from influencegate.findings.duplicates import Duplicates
from influencegate.findings.image_similarity import ImageMatch, _Tiles, image_pairs, thumbnails
from influencegate.findings.image_stats import appended_statistics, stream_statistics
from influencegate.findings.run import find_all
from influencegate.findings.similarity import knn_cosine
from influencegate.findings.view_search import link
from influencegate.workflows import version_state

OLD = 1617  # the previous version: the first 90% of the digits


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def version():
    """The digits plus, among the new samples, a near-copy (noise) of old sample 3 and an exact copy of old 7:
    (images M x 1 x 8 x 8, embeddings M x 64, scores table)."""
    rng = np.random.default_rng(0)
    digits = load_digits()
    images = torch.tensor(digits.images[:, None] / 16.0, dtype=torch.float32)
    images = torch.cat([images, images[3:4] + 0.01 * torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
                        images[7:8]])
    m = len(images)
    emb = np.concatenate([digits.data, digits.data[[3, 7]]]).astype(np.float32) + rng.normal(0, 0.5, (m, 64)).astype(np.float32)
    table = pd.DataFrame({"sample_id": [f"s{i:04d}" for i in range(m)], "log_influence": rng.normal(size=m),
                          "influence": rng.random(m)})
    return images, emb, table


def carried(state: dict, m: int, old: int) -> Previous:
    """The Previous of a version of m rows whose first `old` rows are the previous version's (its `state`)."""
    new = np.ones(m, dtype=bool)
    new[:old] = False

    def pad(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a, np.zeros((m - old, a.shape[1]), np.float32)])

    dups = state["duplicates"]
    return Previous(new, pad(state["outliers"]["knn"]), pad(dups["near_top"]), [*dups["hashes"], *[None] * (m - old)],
                    dups["links"], statistics=pad(state["outliers"]["statistics"]))


def test_knn_of_appended_rows_equals_the_full_search() -> None:
    """New rows searched against all, old rows' previous top-k merged with the new columns: knn_cosine's values."""
    x = np.random.default_rng(1).normal(size=(700, 16)).astype(np.float32)
    reference, _ = knn_cosine(x, 10, block_size=128)
    old = 600
    before = knn_appended(x[:old], 10, Previous.empty(old), block=128)
    np.testing.assert_allclose(before, knn_cosine(x[:old], 10, block_size=128)[0], atol=1e-6)
    new = np.arange(700) >= old
    padded = np.concatenate([before, np.zeros((100, 10), np.float32)])
    np.testing.assert_allclose(knn_appended(x, 10, Previous(new, padded), block=128), reference, atol=1e-6)


def test_outliers_read_every_image_again_when_an_old_rows_statistics_were_not_kept(version) -> None:
    """A kept statistics file that lacks an old row (NaN there) is not used: every image is read again, and the
    outlier scores are the full audit's."""
    images, emb, table = version
    ids = table["sample_id"].tolist()
    before = find_all(table.iloc[:OLD], emb[:OLD], images[:OLD], sample_ids=ids[:OLD], previous=Previous.empty(OLD))
    previous = carried(before.state, len(images), OLD)
    previous.statistics[5] = np.nan
    got = find_all(table, emb, images, sample_ids=ids, previous=previous).table
    full = find_all(table, emb, images, sample_ids=ids).table
    np.testing.assert_allclose(got["outlier_score"], full["outlier_score"], atol=1e-5)


def test_appended_image_statistics_read_only_the_new_images(version) -> None:
    """The outliers' statistics of an appended version: the old rows' kept, only the new images read (the old
    ones here are NaN, which image_statistics refuses), equal to one pass over every image."""
    images = version[0]
    full = stream_statistics(images, block=256)
    new = np.arange(len(images)) >= OLD
    kept = full.to_numpy().copy()
    kept[new] = np.nan
    poisoned = images.clone()
    poisoned[:OLD] = float("nan")
    got = appended_statistics(poisoned, kept, new, block=64)
    np.testing.assert_array_equal(got.to_numpy(), full.to_numpy())
    with pytest.raises(ValueError, match=f"at position {OLD - 1}"):
        appended_statistics(poisoned, kept, np.arange(len(images)) >= OLD - 1, block=64)


def test_all_new_tiles_are_the_pixel_matchers_all_pairs_search(version) -> None:
    """With every sample new, the tiles and link rule give image_pairs' links (absolute and relative rules),
    on 600 digits with the two planted copies and ten 1-pixel shifts of others."""
    digits = version[0]
    images = torch.cat([digits[:588], digits[-2:], torch.roll(digits[20:30], 1, dims=-1)])
    match = ImageMatch()
    tiles = _Tiles(thumbnails(images, match.thumb_size), match)
    top = torch.full((600, match.k), -2.0)
    i, j, s = touching_tiles(tiles.similarity, np.ones(600, dtype=bool), top, match.floor, block=256)
    ok = link(i, j, s, top[:, -1].numpy(), match)
    ri, rj, _ = image_pairs(images, match, block_size=256)
    assert len(ri) >= 5 and set(zip(i[ok].tolist(), j[ok].tolist())) == set(zip(ri.tolist(), rj.tolist()))


def test_appended_findings_equal_a_full_audit_and_find_copies_of_old_samples(version) -> None:
    """The stated tolerance on the digits (+11%): outlier_score equal to 1e-5, the same outliers, and every
    sample's duplicate group the full audit's; the near-copy and the exact copy of old samples are found."""
    images, emb, table = version
    m = len(images)
    ids = table["sample_id"].tolist()
    full = find_all(table, emb, images, sample_ids=ids).table
    before = find_all(table.iloc[:OLD], emb[:OLD], images[:OLD], sample_ids=ids[:OLD], previous=Previous.empty(OLD))
    got = find_all(table, emb, images, sample_ids=ids, previous=carried(before.state, m, OLD)).table
    np.testing.assert_allclose(got["outlier_score"], full["outlier_score"], atol=1e-5)
    assert got["is_outlier"].tolist() == full["is_outlier"].tolist()
    for column in ("duplicate_group", "is_duplicate", "duplicate_of"):
        assert got[column].tolist() == full[column].tolist(), column
    copies = got.set_index("sample_id").loc[[f"s{m - 2:04d}", f"s{m - 1:04d}"]]
    assert copies["is_duplicate"].all() and copies["duplicate_of"].tolist() == ["s0003", "s0007"]


@pytest.mark.parametrize("search", ["index", "exact"])
def test_near_copy_of_an_old_image_found_by_the_views_matcher(search: str) -> None:
    """The multi-view matcher (32 px colour fields), through the streaming index (its candidates restricted to
    pairs touching new samples) and all pairs (new rows x all): each planted copy arrives as a new sample of an
    old original and is linked wherever the full search links it."""
    images, planted = planted_set(32, 60, seed=3)
    m = len(images)
    old = m - len(planted)  # the copies are the new samples
    table = pd.DataFrame({"sample_id": [f"s{i:04d}" for i in range(m)], "influence": np.ones(m)})
    dups = Duplicates(search=search)
    dups.find(table.iloc[:old], None, images=images[:old], previous=Previous.empty(old))
    state = dups.state
    new = np.arange(m) >= old
    top = np.concatenate([state["near_top"], np.zeros((m - old, state["near_top"].shape[1]), np.float32)])
    out = Duplicates(search=search).find(table, None, images=images, previous=Previous(
        new, near_top=top, hashes=[*state["hashes"], *[None] * (m - old)], links=state["links"]))
    reference = Duplicates(search=search).find(table, None, images=images)
    group = out["duplicate_group"].to_numpy()
    found = {(a, b) for a, b in planted if group[a] >= 0 and group[a] == group[b]}
    expected = {(a, b) for a, b in planted if reference["duplicate_group"].iloc[a] >= 0
                and reference["duplicate_group"].iloc[a] == reference["duplicate_group"].iloc[b]}
    assert len(expected) >= 4 and found >= expected

    def members(groups: np.ndarray, row: int) -> set[int]:
        return set(np.flatnonzero(groups == groups[row]).tolist()) if groups[row] >= 0 else {row}

    full = reference["duplicate_group"].to_numpy()
    assert all(members(group, a) == members(full, a) for a in np.flatnonzero(new))  # nothing more, nothing less


def test_version_state_reuses_embeddings_of_the_same_encoder_only(tmp_path: Path) -> None:
    """Kept embeddings come back in this version's rows; another encoder or a dropped sample is refused."""
    ids = ["a", "b", "c"]
    emb = np.arange(6, dtype=np.float32).reshape(3, 2)
    version_state.save_embeddings(str(tmp_path), ids, emb, "f" * 64)
    at, kept = version_state.previous_embeddings(str(tmp_path), ["x", "c", "a", "b"], "f" * 64)
    assert at.tolist() == [2, 3, 1] and np.array_equal(kept, emb)
    with pytest.raises(ValueError, match="another encoder"):
        version_state.previous_embeddings(str(tmp_path), ids, "e" * 64)
    with pytest.raises(ValueError, match="only adds samples"):
        version_state.previous_embeddings(str(tmp_path), ["a", "c"], "f" * 64)
    assert version_state.previous_embeddings(str(tmp_path / "none"), ids, "f" * 64) is None


def test_findings_state_round_trip_in_this_versions_rows(tmp_path: Path) -> None:
    """save_findings then previous_findings: arrays moved to the new version's positions, links re-indexed."""
    from influencegate.findings.image_stats import STATISTICS

    statistics = np.arange(2.0 * len(STATISTICS)).reshape(2, -1)
    state = {"outliers": {"knn": np.array([[0.9], [0.8]], np.float32), "statistics": statistics,
                          "statistics_names": list(STATISTICS)},
             "duplicates": {"near_top": np.array([[0.5], [0.4]], np.float32), "hashes": ["h0", "h1"],
                            "links": (np.array([0]), np.array([1])), "index_order": np.array([1, 0])}}
    version_state.save_findings(str(tmp_path), ["a", "b"], state)
    prev = version_state.previous_findings(str(tmp_path), ["n", "b", "a"])
    assert prev.new.tolist() == [True, False, False]
    assert prev.knn[:, 0].tolist() == pytest.approx([0.0, 0.8, 0.9]) and prev.hashes == [None, "h1", "h0"]
    assert (prev.links[0].tolist(), prev.links[1].tolist()) == ([2], [1])
    np.testing.assert_array_equal(prev.statistics, np.vstack([np.full(len(STATISTICS), np.nan), statistics[::-1]]))
    assert prev.index_rows.tolist() == [1, 2] and prev.index_from == str(tmp_path)  # index rows: b, a


def test_new_samples_placed_on_the_previous_map_beside_their_neighbours(tmp_path: Path) -> None:
    """An appended version's map keeps the previous layout and puts each new sample at its nearest mapped
    neighbours: new samples of two separated clusters land in their own cluster's region of the t-SNE."""
    from influencegate.report.map_layout import placed_layout, tsne_layout

    rng = np.random.default_rng(0)
    centres = np.zeros((2, 8), np.float32)
    centres[0, 0], centres[1, 1] = 5.0, 5.0
    label = np.arange(120) % 2
    emb = centres[label] + rng.normal(0, 0.3, (120, 8)).astype(np.float32)
    new = np.arange(120) >= 100
    mapped, xy = tsne_layout(emb[:100], np.zeros(100, dtype=bool), max_points=100, perplexity=10)
    version_state.save_layout(str(tmp_path), [f"s{i}" for i in range(100)], (mapped, xy))
    kept_new, kept_rows, kept_xy = version_state.previous_layout(str(tmp_path), [f"s{i}" for i in range(120)])
    assert np.array_equal(kept_new, new) and np.array_equal(kept_rows, mapped)
    rows, placed = placed_layout(emb, kept_rows, kept_xy, kept_new)
    assert len(rows) == 120 and np.array_equal(placed[:100], xy)  # every new sample: its share is 20 of 100
    centre = np.array([xy[label[:100] == c].mean(axis=0) for c in (0, 1)])
    fresh = rows >= 100
    distance = np.linalg.norm(placed[fresh][:, None] - centre[None], axis=2)
    assert (distance.argmin(axis=1) == label[rows[fresh]]).all()


def test_a_state_of_another_size_or_without_the_needed_arrays_is_refused(version) -> None:
    """A Previous for other rows, or one that kept no neighbours for its old rows: a ValueError, never a guess."""
    images, emb, table = version
    with pytest.raises(ValueError, match="covers 10 rows"):
        knn_appended(emb[:20], 5, Previous.empty(10), block=64)
    half = Previous(np.arange(20) >= 10)
    with pytest.raises(ValueError, match="no outlier neighbours"):
        knn_appended(emb[:20], 5, half, block=64)
    with pytest.raises(ValueError, match="no near-duplicate top"):
        Duplicates().find(table.iloc[:20], emb[:20], images=images[:20], previous=half)


@pytest.mark.parametrize("search,propose", [("index", 0.9), ("exact", 0.9), ("index", 0.999), ("exact", 0.999)])
def test_appended_views_search_links_by_the_aligned_check_as_the_full_search_does(search: str, propose: float) -> None:
    """Crops to 76-90% arriving as new samples of old smooth fields (48 px), under the absolute rule alone
    (ratio 0): their view similarity stays below the threshold and only the aligned check links them, so an
    appended search that linked by view similarity would find none. The appended groups are the full search's;
    with propose 0.999 the copies are aligned only as each image's nearest view neighbour (ViewMatch.nearest)."""
    from test_findings_views import fields

    from influencegate.findings.views import ViewMatch

    side, old = 48, 40
    big = fields(old, side, seed=0)
    start = (big.shape[-1] - side) // 2
    base = big[:, :, start:start + side, start:start + side]
    crops = [torch.nn.functional.interpolate(base[k:k + 1, :, 3:3 + c, 4:4 + c], size=(side, side), mode="bilinear",
                                             antialias=True)[0] for k, c in enumerate((36, 37, 38, 43))]
    images = torch.cat([base, torch.stack(crops)])
    m = len(images)
    table = pd.DataFrame({"sample_id": [f"s{i:04d}" for i in range(m)], "influence": np.ones(m)})
    views = ViewMatch(ratio=0.0, propose=propose)
    dups = Duplicates(search=search, views=views)
    dups.find(table.iloc[:old], None, images=images[:old], previous=Previous.empty(old))
    state = dups.state
    new = np.arange(m) >= old
    top = np.concatenate([state["near_top"], np.zeros((m - old, state["near_top"].shape[1]), np.float32)])
    got = Duplicates(search=search, views=views).find(table, None, images=images, previous=Previous(
        new, near_top=top, hashes=[*state["hashes"], *[None] * (m - old)], links=state["links"]))
    full = Duplicates(search=search, views=views).find(table, None, images=images)
    assert got["duplicate_group"].tolist() == full["duplicate_group"].tolist()
    groups = got["duplicate_group"].to_numpy()
    assert all(groups[k] >= 0 and groups[k] == groups[old + k] for k in range(4))


def test_the_kept_index_is_reopened_for_the_new_images_and_links_as_one_built_again(tmp_path: Path) -> None:
    """The streaming index the first version keeps in its directory (findings.kept_index) is reopened by the
    appended version, which indexes only its new images (arriving between the old ones: the rows are shuffled):
    the same groups as the appended search that indexes every image again, and the index it keeps in its own
    directory maps each of its rows to one sample of the version."""
    from influencegate.data.npz import read_npz
    from influencegate.findings.kept_index import local_path

    images, planted = planted_set(32, 60, seed=3)
    m = len(images)
    old = m - len(planted)
    ids = np.array([f"s{i:04d}" for i in range(m)])
    first = Duplicates(search="index")
    first.find(pd.DataFrame({"sample_id": ids[:old], "influence": 1.0}), None, images=images[:old],
               previous=Previous(np.ones(old, dtype=bool), keep_in=str(tmp_path / "v1")))
    version_state.save_findings(str(tmp_path / "v1"), ids[:old], {"duplicates": first.state})
    shuffled = np.random.default_rng(1).permutation(m)
    table = pd.DataFrame({"sample_id": ids[shuffled], "influence": 1.0})

    def appended(reuse: bool) -> tuple[pd.DataFrame, dict]:
        previous = version_state.previous_findings(str(tmp_path / "v1"), list(ids[shuffled]))
        previous.keep_in = str(tmp_path / ("v2" if reuse else "v2_rebuilt"))
        if not reuse:
            previous.index_rows = None
        dups = Duplicates(search="index")
        return dups.find(table, None, images=images[shuffled], previous=previous), dups.state

    got, state = appended(reuse=True)
    rebuilt, rebuilt_state = appended(reuse=False)
    assert got["duplicate_group"].tolist() == rebuilt["duplicate_group"].tolist()
    assert (got["duplicate_group"] >= 0).sum() >= 8
    at = {sid: row for row, sid in enumerate(ids[shuffled])}
    assert state["index_order"][:old].tolist() == [at[s] for s in ids[:old]]  # the kept rows first: reopened
    assert rebuilt_state["index_order"].tolist() == list(range(m))
    kept = read_npz(local_path(str(tmp_path / "v2")) + ".npz")
    assert kept["codes"].shape[0] == m and sorted(state["index_order"].tolist()) == list(range(m))
    assert Path(local_path(str(tmp_path / "v2"))).stat().st_size == m * int(np.prod(kept["thumbs"]))
    np.testing.assert_array_equal(kept["codes"][:old], read_npz(local_path(str(tmp_path / "v1")) + ".npz")["codes"])


def test_a_kept_index_is_reopened_only_with_its_own_settings_and_cut_to_its_kept_rows(tmp_path: Path) -> None:
    """kept_index.reopen: None for other ViewMatch settings, another row count, no kept index or a remote
    folder, or a file shorter than its kept rows; rows an interrupted version appended after keeping are cut
    off; a folder about to be written has no settings file left (a half-written index is never read as one)."""
    from influencegate.findings import kept_index
    from influencegate.findings.duplicate_index import CODE_DIM, ViewIndex
    from influencegate.findings.views import ViewMatch

    images, _ = planted_set(32, 12, seed=5)
    path = kept_index.writable_path(str(tmp_path / "v1"))
    index = ViewIndex(ViewMatch(), path=path, search_bounds=True)
    index.add(images[:10])
    kept_index.keep(index, str(tmp_path / "v1"))
    with open(path, "ab") as extra:  # an interrupted appended version, writing in place
        extra.write(b"\0" * 1000)
    assert kept_index.reopen(str(tmp_path / "v1"), None, ViewMatch(k=4), CODE_DIM, 0, 10) is None
    assert kept_index.reopen(str(tmp_path / "v1"), None, ViewMatch(), CODE_DIM, 0, 9) is None  # another count
    assert kept_index.reopen(str(tmp_path / "none"), None, ViewMatch(), CODE_DIM, 0, 10) is None
    assert kept_index.local_path("s3://bucket/runs/v1") is None
    again = kept_index.reopen(str(tmp_path / "v1"), str(tmp_path / "v2"), ViewMatch(), CODE_DIM, 0, 10)
    try:
        assert again.count == 10 and os.path.getsize(again.path) == 10 * int(np.prod(again.shapes()["thumbs"]))
        again.add(images[10:])
        fresh = ViewIndex(ViewMatch(), search_bounds=True)
        fresh.add(images)
        np.testing.assert_array_equal(again.codes(), fresh.codes())
        rows = np.arange(len(images))
        np.testing.assert_array_equal(again.thumbnails(rows), fresh.thumbnails(rows))
        fresh.close()
    finally:
        again.close()
    os.truncate(path + ".low", 100)  # shorter than its 10 kept rows
    assert kept_index.reopen(str(tmp_path / "v1"), None, ViewMatch(), CODE_DIM, 0, 10) is None
    assert os.path.exists(path + ".npz") and kept_index.writable_path(str(tmp_path / "v1")) == path
    assert not os.path.exists(path + ".npz")
