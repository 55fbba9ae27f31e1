"""The parts of the joint outlier score against independent references: the image statistics against closed
forms on synthetic images, the multi-scale k-NN distances against a brute-force search, the shrunk Mahalanobis
distance against its formula; and a planted group of alike foreign images larger than k found by the joint score
where the 10-NN rule misses it."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from influencegate.findings.image_stats import EPS, HIST_BINS, image_statistics, stream_statistics
from influencegate.findings.outliers import K_LARGE_MAX, Outliers, k_large
from influencegate.findings.similarity import knn_mean_distances
from influencegate.statistics import mahalanobis


def smooth(n: int, side: int = 32, seed: int = 0) -> np.ndarray:
    """n smooth RGB images in [0.2, 0.8] (bilinear upsampling of 4 x 4 random values), n x 3 x side x side."""
    import torch
    small = torch.as_tensor(np.random.default_rng(seed).uniform(0.2, 0.8, (n, 3, 4, 4)), dtype=torch.float32)
    return torch.nn.functional.interpolate(small, size=(side, side), mode="bilinear", align_corners=False).numpy()


def test_constant_image_statistics_are_closed_form():
    red = np.zeros((1, 3, 8, 8))
    red[:, 0] = 1.0
    s = image_statistics(red).iloc[0]
    assert s["brightness"] == pytest.approx(0.299) and s["contrast"] == 0 and s["entropy"] == 0
    assert s["log_sharpness"] == pytest.approx(np.log(EPS)) and s["clipped"] == 0
    # rg = 1, yb = 0.5 everywhere: no spread, 0.3 x |mean| = 0.3 sqrt(1.25); constant channels correlate 0
    assert s["colourfulness"] == pytest.approx(0.3 * np.sqrt(1.25)) and s["channel_corr"] == 0
    black = image_statistics(np.zeros((1, 1, 8, 8))).iloc[0]
    assert black["clipped"] == 1 and black["colourfulness"] == 0 and black["channel_corr"] == 1


def test_entropy_and_clipped_share_of_known_histograms():
    half = np.zeros((1, 1, 8, 8))
    half[..., 4:] = 1.0  # half black, half white: 1 bit, half of the pixels at each end
    s = image_statistics(half).iloc[0]
    assert s["entropy"] == pytest.approx(1.0) and s["clipped"] == pytest.approx(0.5)
    quarter = np.full((1, 1, 8, 8), 0.5)
    quarter[..., :2] = 0.0  # 16 of 64 pixels at black
    assert image_statistics(quarter)["clipped"].iloc[0] == pytest.approx(0.25)
    # each row runs through all bins, 2 pixels per bin: every bin equally full, log2(bins) bits
    ramp = np.repeat((np.arange(HIST_BINS * 2) + 0.5)[None] / (HIST_BINS * 2), 4, axis=0)[None, None]
    assert image_statistics(ramp)["entropy"].iloc[0] == pytest.approx(np.log2(HIST_BINS))


def test_high_frequency_energy_separates_noise_blur_and_grey():
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 1, (20, 3, 64, 64))
    images = smooth(20, 64)
    s_noise, s_smooth = image_statistics(noise), image_statistics(images)
    assert s_noise["log_hf_energy"].min() > s_smooth["log_hf_energy"].max()
    assert s_noise["log_sharpness"].min() > s_smooth["log_sharpness"].max()
    # white noise: var(Laplacian) = (16 + 4) var(x) exactly in expectation, so sharpness ~ 20
    grey_noise = image_statistics(rng.uniform(0, 1, (50, 1, 64, 64)))
    assert np.exp(grey_noise["log_sharpness"]).mean() == pytest.approx(20, rel=0.03)
    # independent channels: correlation ~ 0 and colourful; the same image in grey: correlation 1, colourless
    assert s_noise["channel_corr"].abs().max() < 0.1 and s_noise["colourfulness"].min() > 0.3
    grey_rgb = image_statistics(np.repeat(images[:, :1], 3, axis=1))
    assert np.allclose(grey_rgb["channel_corr"], 1) and np.allclose(grey_rgb["colourfulness"], 0)


def test_streamed_statistics_equal_one_block_and_undo_the_normalisation():
    pixels = np.concatenate([smooth(5, 16), np.random.default_rng(1).uniform(0, 1, (2, 3, 16, 16))])
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    normalised = (pixels - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1))
    got = stream_statistics(normalised, mean, std, block=3)
    pd.testing.assert_frame_equal(got, image_statistics(pixels), atol=1e-5)
    with pytest.raises(ValueError, match="H, W >= 3"):
        image_statistics(np.zeros((2, 3, 2, 2)))
    pixels[5, 1, 0, 0] = np.nan  # (an infinite pixel is clipped to 0 or 1 like any other)
    with pytest.raises(ValueError, match="1 images have non-finite pixels.*at position 5"):
        stream_statistics(pixels, block=3)


@pytest.mark.parametrize("index", ["exact", "faiss-flat"])
def test_multi_scale_knn_distances_match_brute_force(index):
    if index != "exact":
        pytest.importorskip("faiss")
    emb = np.random.default_rng(2).normal(size=(60, 8))
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    dist = 1 - unit @ unit.T
    np.fill_diagonal(dist, np.inf)
    ordered = np.sort(dist, axis=1)
    ks = (1, 10, 59, 80)  # 80 is capped at M - 1 = 59
    want = np.column_stack([ordered[:, :min(k, 59)].mean(axis=1) for k in ks])
    np.testing.assert_allclose(knn_mean_distances(emb, ks, block_size=16, index=index), want, atol=1e-5)


def test_faiss_chunks_equal_one_search():
    pytest.importorskip("faiss")
    from influencegate.findings.faiss_index import faiss_knn, faiss_knn_chunks
    emb = np.random.default_rng(3).normal(size=(50, 6)).astype(np.float32)
    sims, idx = faiss_knn(emb, 5, "faiss-flat")
    parts = list(faiss_knn_chunks(emb, 5, "faiss-flat", chunk=7))
    assert [p[0] for p in parts] == list(range(0, 50, 7))
    np.testing.assert_allclose(np.concatenate([p[1] for p in parts]), sims)
    np.testing.assert_array_equal(np.concatenate([p[2] for p in parts]), idx)


def test_mahalanobis_matches_the_formula():
    x = np.random.default_rng(4).normal(size=(40, 3)) @ np.array([[2.0, 0, 0], [0.5, 1, 0], [0, 0, 0.1]])
    c = x - x.mean(axis=0)
    cov = np.cov(x, rowvar=False)
    for shrink in (0.0, 0.3):
        s = (1 - shrink) * cov + shrink * np.trace(cov) / 3 * np.eye(3)
        want = np.sqrt([r @ np.linalg.inv(s) @ r for r in c])
        np.testing.assert_allclose(mahalanobis(x, shrink), want, rtol=1e-9)
    with pytest.raises(ValueError):
        mahalanobis(x, 1.5)


def test_k_large_grows_with_n_within_bounds():
    assert k_large(100) == 10 and k_large(600) == 30 and k_large(10 ** 6) == K_LARGE_MAX
    assert k_large(50, k=20) == 20


def planted(n_background: int, n_group: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings: n_background in 8 clusters (16-D, spread 0.3) and n_group alike foreign ones (a tight group in
    a direction of its own) last."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, 16))
    background = centres[rng.integers(0, 8, n_background)] + 0.3 * rng.normal(size=(n_background, 16))
    group = 4 * rng.normal(size=16) + 0.05 * rng.normal(size=(n_group, 16))
    return np.concatenate([background, group]), np.arange(n_background, n_background + n_group)


def top_share(score: np.ndarray, rows: np.ndarray, share: float = 0.1) -> float:
    top = np.argsort(-score, kind="stable")[:int(round(share * len(score)))]
    return float(np.isin(rows, top).mean())


def test_a_group_larger_than_k_is_found_by_the_large_scale():
    emb, group = planted(580, 20)  # k_large(600) = 30 > 20
    table = pd.DataFrame({"sample_id": [f"s{i}" for i in range(600)],
                          "log_influence": np.random.default_rng(6).normal(size=600)})
    joint = Outliers(combine="joint")
    score = joint.find(table, emb)["outlier_score"].to_numpy()
    assert joint.summary()["k_large"] == 30 and top_share(score, group) == 1.0
    ten = Outliers(combine="max")
    ten.find(table, emb)
    assert top_share(ten.components["z_knn_distance"].to_numpy(), group) == 0.0  # its 10 neighbours: its own


def test_a_group_of_foreign_images_is_found_by_the_image_statistics():
    emb, group = planted(280, 20)  # k_large(300) = 15 < 20: the embeddings alone cannot see it
    images = np.concatenate([smooth(280, 16), np.random.default_rng(7).uniform(0, 1, (20, 3, 16, 16))])
    table = pd.DataFrame({"sample_id": [f"s{i}" for i in range(300)],
                          "log_influence": np.random.default_rng(8).normal(size=300)})
    joint = Outliers(combine="joint")
    score = joint.find(table, emb, images=images)["outlier_score"].to_numpy()
    assert top_share(score, group) == 1.0 and "entropy" in joint.summary()["parts"]
    old = Outliers(combine="mean").find(table, emb)["outlier_score"].to_numpy()
    assert top_share(old, group) < 0.5
    with pytest.raises(ValueError, match="aligned"):
        joint.find(table, emb, images=images[:10])


def test_the_registered_finding_reads_the_images_and_says_so():
    from influencegate.findings.run import find_all
    emb, _ = planted(100, 5)
    images = np.concatenate([smooth(100, 16), np.random.default_rng(9).uniform(0, 1, (5, 3, 16, 16))])
    table = pd.DataFrame({"sample_id": [f"s{i}" for i in range(105)],
                          "log_influence": np.random.default_rng(10).normal(size=105)})
    found = find_all(table, emb, images, {"duplicates": None})
    assert "image statistics" in found.texts["outliers"] and found.table["outlier_score"].notna().all()
    without = find_all(table, emb, None, {"duplicates": None})
    assert "no image statistics" in without.texts["outliers"]
    assert not np.allclose(found.table["outlier_score"], without.table["outlier_score"])


def test_identical_embeddings_stay_finite_and_bad_pixels_are_refused():
    emb, _ = planted(100, 15)
    emb[100:] = emb[100]  # 15 identical embeddings: their 10-NN distance is 0 (or rounds below)
    table = pd.DataFrame({"sample_id": [f"s{i}" for i in range(115)], "log_influence": np.zeros(115)})
    score = Outliers().find(table, emb)["outlier_score"].to_numpy()
    assert np.isfinite(score).all() and top_share(score, np.arange(100, 115), 0.15) == 1.0  # two-sided: tight group
    images = smooth(115, 8)
    images[3, 0, 2, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite pixels.*at position 3"):
        Outliers().find(table, emb, images=images)
