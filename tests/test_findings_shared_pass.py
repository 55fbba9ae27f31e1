"""The pixels read once for two findings (issue 14, scale): the duplicate index's streaming pass computes the
outliers' image statistics (image_stats.StatisticsStream, fed by duplicate_links.stream_index and shared by
find_all), equal to stream_statistics on the same images, and the exact check's content hashes; and the sort-based distinct keys of the candidate
stage against np.unique."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from influencegate.findings import FindingsConfig, Outliers, find_all, outliers
from influencegate.findings import duplicate_edges, duplicate_links
from influencegate.findings.code_candidates import unique_keys
from influencegate.findings.duplicate_links import content_hashes, stream_index
from influencegate.findings.image_stats import STATISTICS, StatisticsStream, image_statistics, stream_statistics
from influencegate.findings.views import ViewMatch


def images(n: int, side: int = 24, seed: int = 0) -> np.ndarray:
    """n x 3 x side x side: smooth random colour fields in [0, 1], two of them pure noise, one blank."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, 5, 5, generator=g), size=(side, side), mode="bicubic",
                      align_corners=False).clamp(0, 1).numpy()
    x[1:3] = np.random.default_rng(seed).uniform(0, 1, (2, 3, side, side))
    x[4] = 0.0
    return x


def test_statistics_stream_in_uneven_blocks_equals_the_whole_array_and_undoes_the_normalisation():
    pixels = images(11)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    normalised = (pixels - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1))
    stream = StatisticsStream(mean, std)
    for start, stop in ((0, 4), (4, 5), (5, 11)):
        stream.add(torch.from_numpy(normalised[start:stop]))
    assert stream.count == 11
    pd.testing.assert_frame_equal(stream.table(), image_statistics(pixels), atol=1e-5)
    empty = StatisticsStream().table()
    assert list(empty.columns) == list(STATISTICS) and len(empty) == 0
    bad = pixels.copy()
    bad[7, 0, 3, 3] = np.nan
    late = StatisticsStream()
    late.add(bad[:5])
    with pytest.raises(ValueError, match="at position 7"):  # the position in the dataset, not in the block
        late.add(bad[5:])


def test_index_streaming_pass_computes_the_statistics_once(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(duplicate_links, "INDEX_BATCH", 4)  # three batches, the last one short
    x = images(10)
    stream, hashes = StatisticsStream(), []
    index = stream_index(torch.from_numpy(x), ViewMatch(), stream, hashes)
    try:
        assert index.count == 10
    finally:
        index.close()
    pd.testing.assert_frame_equal(stream.table(), stream_statistics(x), atol=1e-6)
    assert hashes == content_hashes(x)
    again = stream_index(x, ViewMatch(), stream)  # already filled: not added twice
    again.close()
    assert stream.count == 10


def test_find_all_reads_the_pixels_once_on_the_index_path(monkeypatch: pytest.MonkeyPatch):
    """The outliers' statistics and the exact check's content hashes both come from the index's streaming pass."""
    x = images(40, side=32)
    x[20] = x[10]  # one exact copy
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 8)).astype(np.float32)
    table = pd.DataFrame({"sample_id": [f"s{i}" for i in range(40)], "log_influence": rng.normal(size=40)})
    alone = find_all(table, emb, x, FindingsConfig(duplicates=None))  # the outliers read the images themselves

    def no_second_read(*args, **kwargs):
        raise AssertionError("the outliers read the images again")

    monkeypatch.setattr(outliers, "stream_statistics", no_second_read)
    monkeypatch.setattr(duplicate_edges, "content_hashes", no_second_read)
    shared = find_all(table, emb, x, FindingsConfig(duplicates={"search": "index"}))
    np.testing.assert_allclose(shared.table["outlier_score"].to_numpy(), alone.table["outlier_score"].to_numpy(),
                               rtol=1e-6)
    assert shared.table.set_index("sample_id").loc["s20", "is_duplicate"]
    with pytest.raises(AssertionError, match="read the images again"):  # the all-pairs path fills nothing
        find_all(table, emb, x, FindingsConfig(duplicates={"search": "exact"}))
    with pytest.raises(AssertionError, match="read the images again"):  # without the outliers: hashes alone
        find_all(table, emb, x, FindingsConfig(duplicates={"search": "exact"}, outliers=None))


def test_precomputed_statistics_must_match_the_embeddings():
    x = images(12)
    table = pd.DataFrame({"sample_id": [f"s{i}" for i in range(12)]})
    emb = np.random.default_rng(1).normal(size=(12, 4))
    stats = stream_statistics(x)
    got = Outliers().find(table, emb, statistics=stats)["outlier_score"].to_numpy()
    np.testing.assert_allclose(got, Outliers().find(table, emb, images=x)["outlier_score"].to_numpy())
    with pytest.raises(ValueError, match="one row per embedding \\(12\\); got 11 rows"):
        Outliers().find(table, emb, statistics=stats.iloc[:11])
    with pytest.raises(ValueError, match="missing \\['entropy'\\]"):
        Outliers().find(table, emb, statistics=stats.drop(columns="entropy"))
    broken = stats.copy()
    broken.loc[3, "contrast"] = np.inf
    with pytest.raises(ValueError, match="not finite in 1 rows, the first at position 3"):
        Outliers().find(table, emb, statistics=broken)


@pytest.mark.parametrize("size", [0, 1, 1000])
def test_unique_keys_equal_numpy_unique(size: int):
    keys = np.random.default_rng(size).integers(0, 10 ** 12 if size > 1 else 5, size=size)
    keys = np.concatenate([keys, keys[: size // 3]])  # repeated keys
    got = unique_keys(keys)
    np.testing.assert_array_equal(got, np.unique(keys))
    assert got.dtype == keys.dtype
