"""Findings (issue 4): duplicates, outliers, fairness audit, shared input checks. Small synthetic data."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from influencegate.findings import (Duplicates, Fairness, ImageMatch, Outliers, adjust_pvalues, content_hashes,
                                    cosine_pairs, image_pairs, knn_cosine, share_test)
from influencegate.findings.base import align_embeddings
from influencegate.findings.image_similarity import thumbnails


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tests run many tiny tensor ops; on a shared, oversubscribed machine torch's intra-op threads
    make each of them orders of magnitude slower (the image-similarity reference test: ~0.3 s on one thread,
    over 10 s on two contended ones). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def scores(influence: np.ndarray, ids: list[str] | None = None, **groups) -> pd.DataFrame:
    """A minimal scores table in the DESIGN.md section 2 layout."""
    n = len(influence)
    table = pd.DataFrame({"sample_id": ids or [f"s{i:04d}" for i in range(n)], "path": None,
                          "influence": influence, "log_influence": np.log(influence)})
    table["influence_rank"] = table["influence"].rank(ascending=False, method="first").astype("Int64")
    table["influence_percentile"] = 100.0 * (n - table["influence_rank"].astype(float)) / max(n - 1, 1)
    for name, values in groups.items():
        table[name] = values
    table["error"] = None
    return table


def clustered(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    """n embeddings spread in d dims (pairwise cosines well below 0.9 for distinct points)."""
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


# -- similarity --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("block", [1, 7, 64, 4096])
def test_blockwise_pairs_equal_dense(block):
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(150, 4)).astype(np.float32)  # low dim: many pairs above the threshold
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    dense = x @ x.T
    ii, jj = np.nonzero(np.triu(dense >= 0.9, k=1))
    i, j, s = cosine_pairs(emb, 0.9, block_size=block)
    assert len(i) > 100
    np.testing.assert_array_equal(i, ii)
    np.testing.assert_array_equal(j, jj)
    np.testing.assert_allclose(s, dense[ii, jj], atol=1e-5)


@pytest.mark.parametrize("block", [1, 5, 33, 2048])
def test_blockwise_knn_equals_dense(block):
    emb = np.random.default_rng(2).normal(size=(80, 6)).astype(np.float32)
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    dense = x @ x.T
    np.fill_diagonal(dense, -np.inf)
    expected = -np.sort(-dense, axis=1)[:, :5]
    sims, idx = knn_cosine(emb, 5, block_size=block)
    np.testing.assert_allclose(sims, expected, atol=1e-5)
    assert not (idx == np.arange(80)[:, None]).any()  # never its own neighbour
    np.testing.assert_allclose(np.take_along_axis(dense, idx, 1), sims, atol=1e-5)


# -- duplicates --------------------------------------------------------------------------------------------
def planted_duplicates():
    rng = np.random.default_rng(3)
    n = 60
    emb = clustered(n, seed=3)
    images = torch.as_tensor(rng.normal(size=(n, 1, 8, 8)), dtype=torch.float32)
    # near-duplicates of 5: rows 40, 41 (chain of two copies); of 12: row 42; exact copy of 20: row 43
    for row, src, eps in ((40, 5, 0.01), (41, 5, 0.02), (42, 12, 0.01)):
        emb[row] = emb[src] + eps * rng.normal(size=emb.shape[1])
        images[row] = images[src] + eps
    images[43] = images[20]
    influence = rng.uniform(1.0, 2.0, n)
    influence[[40, 41, 42, 43]] = 0.1  # copies at the lowest influence, as in the paper
    influence[5] = 5.0
    return scores(influence), emb, images


@pytest.mark.parametrize("near", ["embedding", "image", "both"])
def test_duplicates_groups_and_canonical_member(near):
    table, emb, images = planted_duplicates()
    dup = Duplicates(threshold=0.98, near=near)
    out = dup.find(table, emb, images=images)
    assert list(out.columns) == ["duplicate_group", "is_duplicate", "duplicate_of"]
    assert out.index.equals(table.index)
    ids = table["sample_id"]
    groups = {tuple(sorted(ids[out["duplicate_group"] == g])) for g in set(out["duplicate_group"]) - {-1}}
    assert groups == {("s0005", "s0040", "s0041"), ("s0012", "s0042"), ("s0020", "s0043")}
    # keep="first": the earliest member is canonical, the others are duplicates of it
    assert out.loc[40, "duplicate_of"] == out.loc[41, "duplicate_of"] == out.loc[5, "duplicate_of"] == "s0005"
    assert not out.loc[5, "is_duplicate"] and out.loc[40, "is_duplicate"] and out.loc[41, "is_duplicate"]
    assert out.loc[43, "duplicate_of"] == "s0020" and out.loc[43, "is_duplicate"]
    assert out["duplicate_group"].dtype == np.int64
    assert (out.loc[out["duplicate_group"] == -1, "duplicate_of"].isna()).all()
    assert out["is_duplicate"].sum() == 4
    summary = dup.summary()
    assert summary["groups"] == 3 and summary["duplicates"] == 4 and summary["exact_pairs"] == 1
    assert summary["signals"] == {"embedding": "embedding", "image": "image", "both": "image+embedding"}[near]
    assert (summary["image_pairs"] > 0) == (near != "embedding")
    assert (summary["embedding_pairs"] > 0) == (near != "image")
    assert summary["duplicate_fraction"] == pytest.approx(4 / 60)
    assert summary["median_influence_percentile_duplicates"] < 10
    g = dup.groups()
    assert set(g.columns) >= {"duplicate_group", "sample_id", "influence", "influence_rank", "duplicate_of"}
    assert len(g) == 7


def test_duplicates_keep_rules_and_exact_only():
    table, emb, images = planted_duplicates()
    table.loc[41, "influence_rank"] = 0  # make the copy the most influential member of its group
    out = Duplicates(threshold=0.98, keep="most_influential").find(table, emb, images=images)
    assert out.loc[5, "duplicate_of"] == "s0041" and out.loc[5, "is_duplicate"] and not out.loc[41, "is_duplicate"]
    out = Duplicates(threshold=0.98, keep="least_influential").find(table, emb, images=images)
    assert out.loc[40, "duplicate_of"] in ("s0040", "s0042") or out.loc[40, "duplicate_of"] == out.loc[5, "duplicate_of"]
    # exact only: just the hash-equal pair
    out = Duplicates(near="none").find(table, emb, images=images)
    assert sorted(table["sample_id"][out["duplicate_group"] >= 0]) == ["s0020", "s0043"]
    assert len(set(content_hashes(images))) == 59
    # images alone (near="auto"): the pixel similarity finds the near copies (a brightness offset) too
    out = Duplicates().find(table, None, images=images)
    assert sorted(table["sample_id"][out["duplicate_group"] >= 0]) == ["s0005", "s0012", "s0020", "s0040", "s0041",
                                                                       "s0042", "s0043"]


def test_duplicates_auto_falls_back_to_embeddings_above_image_max_samples():
    """near="auto" compares pixels up to image_max_samples examined samples, the embedding cosine above it
    (O(M^2) image search guard), and says so in summary() and in find_all's text."""
    from influencegate.findings.run import FindingsConfig, find_all

    table, emb, images = planted_duplicates()  # 60 samples
    expected = {"image": Duplicates(threshold=0.98, near="image").find(table, emb, images=images),
                "embedding": Duplicates(threshold=0.98, near="embedding").find(table, emb, images=images)}
    for limit, signal in ((60, "image"), (59, "embedding")):
        dup = Duplicates(threshold=0.98, image_max_samples=limit)
        pd.testing.assert_frame_equal(dup.find(table, emb, images=images), expected[signal])
        summary = dup.summary()
        assert summary["signals"] == signal and summary["auto_fallback"] == (signal == "embedding")
        assert summary["image_max_samples"] == limit and summary["exact_pairs"] == 1  # exact copies either way
        assert (summary["image_pairs"] > 0) == (signal == "image")
    # explicit near="image" is never redirected; auto without embeddings above the limit is a clear error
    assert Duplicates(near="image", image_max_samples=1).find(table, emb, images=images).equals(
        Duplicates(near="image").find(table, emb, images=images))
    with pytest.raises(ValueError, match="image_max_samples=59.*no embeddings"):
        Duplicates(image_max_samples=59).find(table, None, images=images)
    found = find_all(table, emb, images, FindingsConfig(duplicates={"image_max_samples": 10}, outliers=None))
    assert "embedding cosine only" in found.texts["duplicates"] and "image_max_samples = 10" in found.texts["duplicates"]
    assert "cosine only" not in find_all(table, emb, images, FindingsConfig(outliers=None)).texts["duplicates"]


def test_duplicates_error_rows_and_sample_ids():
    table, emb, images = planted_duplicates()
    bad = pd.DataFrame({"sample_id": ["broken.png"], "path": None, "influence": np.nan, "log_influence": np.nan,
                        "influence_rank": pd.NA, "influence_percentile": np.nan, "error": "unreadable file"})
    table = pd.concat([bad.astype(table.dtypes.to_dict()), table], ignore_index=True)  # error row first: embeddings align by sample_ids or order
    for near in ("embedding", "image"):
        out = Duplicates(threshold=0.98, near=near).find(table, emb, images=images)
        assert out.loc[0, "duplicate_group"] == -1 and not out.loc[0, "is_duplicate"]
        assert out.loc[41, "duplicate_of"] == "s0005"
        perm = np.random.default_rng(0).permutation(len(emb))
        ids = [f"s{i:04d}" for i in perm]
        out2 = Duplicates(threshold=0.98, near=near).find(table, emb[perm], images=images[perm], sample_ids=ids)
        pd.testing.assert_frame_equal(out, out2)


# -- image similarity --------------------------------------------------------------------------------------
def smooth_images(n: int, side: int = 8, seed: int = 0) -> np.ndarray:
    """n distinct smooth random images, n x 1 x side x side (pairwise similarities far below 0.98)."""
    x = torch.as_tensor(np.random.default_rng(seed).normal(size=(n, 1, side // 2, side // 2)), dtype=torch.float32)
    return torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False).numpy()


def reference_similarity(a: np.ndarray, b: np.ndarray, max_shift: int = 2, min_crop: int = 6) -> float:
    """Plain numpy restatement of the module docstring's s(a, b) for two S x S images (independent check)."""
    side = a.shape[0]

    def crops(x: np.ndarray):
        for c in range(min_crop, side):
            for oy in range(side - c + 1):
                for ox in range(side - c + 1):
                    window = torch.as_tensor(x[oy:oy + c, ox:ox + c])[None, None]
                    yield torch.nn.functional.interpolate(window, size=(side, side), mode="bilinear",
                                                          align_corners=False)[0, 0].numpy()

    best = -1.0
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            ya, yb = slice(max(dy, 0), side + min(dy, 0)), slice(max(-dy, 0), side + min(-dy, 0))
            xa, xb = slice(max(dx, 0), side + min(dx, 0)), slice(max(-dx, 0), side + min(-dx, 0))
            best = max(best, np.corrcoef(a[ya, xa].ravel(), b[yb, xb].ravel())[0, 1])
    for x, y in ((a, b), (b, a)):
        for window in crops(y):
            best = max(best, np.corrcoef(x.ravel(), window.ravel())[0, 1])
    return float(best)


def test_image_similarity_matches_reference_and_is_blockwise_invariant():
    images = smooth_images(10)
    i, j, s = image_pairs(images, ImageMatch(threshold=-1.0, ratio=0.0), block_size=4)
    assert len(i) == 10 * 9 // 2 and (i < j).all()  # every pair once
    ref = np.array([reference_similarity(images[a, 0], images[b, 0]) for a, b in zip(i, j)])
    np.testing.assert_allclose(s, ref, atol=1e-4)
    assert s.max() < 0.98  # distinct images stay far below the thresholds
    for block in (3, 4096):
        i2, j2, s2 = image_pairs(images, ImageMatch(threshold=-1.0, ratio=0.0), block_size=block)
        np.testing.assert_array_equal(i2, i)
        np.testing.assert_array_equal(j2, j)
        np.testing.assert_allclose(s2, s, atol=1e-5)


def test_image_pairs_find_shifted_cropped_and_noisy_copies_only():
    rng = np.random.default_rng(11)
    images = smooth_images(80, seed=11)
    src = images[[3, 10, 20, 30]]
    shifted = np.zeros_like(src[0])
    shifted[:, 2:, :7] = src[0][:, :6, 1:]  # 2 px down, 1 px left, zero fill
    crop = torch.nn.functional.interpolate(torch.as_tensor(src[1][None, :, 1:7, 0:6]), size=(8, 8), mode="bilinear",
                                           align_corners=False)[0].numpy()  # a 6 x 6 window resized back
    noisy = src[2] + rng.normal(0, 0.03 * src[2].std(), src[2].shape)
    brighter = 2.0 * src[3] + 1.0
    data = np.concatenate([images, np.stack([shifted, crop, noisy, brighter]).astype(np.float32)])
    i, j, s = image_pairs(data, ImageMatch())
    assert list(zip(i.tolist(), j.tolist())) == [(3, 80), (10, 81), (20, 82), (30, 83)]
    assert (s > 0.996).all()
    # a shift beyond max_shift, or a crop below min_crop, is not searched
    i, _, _ = image_pairs(data, ImageMatch(max_shift=0.1, min_crop=0.9))
    assert 80 not in i and 81 not in i


def test_relative_rule_links_a_distinct_copy_but_not_a_crowd_of_look_alikes():
    rng = np.random.default_rng(12)
    base = smooth_images(1, seed=12)[0]
    base = (base - base.mean()) / base.std()
    crowd = [base + rng.normal(0, 0.1, base.shape) for _ in range(8)]  # 8 look-alikes of one image
    others = smooth_images(20, seed=13)
    distinct = (others[0] - others[0].mean()) / others[0].std()
    copy = distinct + rng.normal(0, 0.1, distinct.shape)  # as far from its original as the look-alikes
    data = np.concatenate([np.stack(crowd), others[1:], np.stack([distinct, copy])]).astype(np.float32)
    n = len(data)
    i, j, s_all = image_pairs(data, ImageMatch(threshold=-1.0, ratio=0.0))
    among_crowd = s_all[(i < 8) & (j < 8)]
    assert (among_crowd > 0.98).all() and (among_crowd < 0.9955).all()  # above the floor, below the threshold
    others_s = s_all[~((i < 8) & (j < 8))]
    assert 0.98 <= others_s[-1] < 0.9955 and np.sort(others_s)[-2] < 0.9  # the copy pair, then nothing close
    i, j, s = image_pairs(data, ImageMatch())
    assert list(zip(i.tolist(), j.tolist())) == [(n - 2, n - 1)]  # the relative rule links the copy only
    assert len(image_pairs(data, ImageMatch(ratio=0.0))[0]) == 0  # the absolute rule alone: nothing
    found = Duplicates().find(scores(np.ones(n)), None, images=data)
    assert found["duplicate_group"].iloc[-2] == found["duplicate_group"].iloc[-1] >= 0
    assert (found["duplicate_group"].iloc[:-2] == -1).all()


def test_thumbnails_any_size_never_upsampled_and_flat_images_match_nothing():
    big = smooth_images(12, side=32, seed=14).repeat(3, axis=1)  # 3 x 32 x 32
    assert thumbnails(big, 16).shape == (12, 16, 16)
    assert thumbnails(smooth_images(3), 16).shape == (3, 8, 8)
    moved = np.zeros_like(big[:1])
    moved[..., 4:, :] = big[:1, :, :28, :]  # 4 px = 1/8 of the side
    i, j, _ = image_pairs(np.concatenate([big, moved]), ImageMatch())
    assert list(zip(i.tolist(), j.tolist())) == [(0, 12)]
    flat = np.concatenate([np.zeros((2, 1, 8, 8)), np.ones((1, 1, 8, 8)), smooth_images(5)]).astype(np.float32)
    i, _, s = image_pairs(flat, ImageMatch(threshold=-1.0, ratio=0.0))
    assert np.isfinite(s).all() and not ((i < 3) & (s > 0.5)).any()  # flat regions: NCC 0, not NaN


# -- outliers ----------------------------------------------------------------------------------------------
def test_outlier_score_ranks_planted_far_points_first():
    rng = np.random.default_rng(4)
    n, far = 300, [7, 99, 250]
    centers = rng.normal(size=(3, 8)) * 3
    emb = centers[rng.integers(0, 3, n)] + 0.3 * rng.normal(size=(n, 8))
    influence = np.exp(rng.normal(0, 0.3, n))
    for row in far:
        emb[row] = rng.normal(size=8) * 3  # away from every cluster
        influence[row] *= 6  # and more influential
    table = scores(influence)
    finder = Outliers(k=5, combine="mean")
    out = finder.find(table, emb.astype(np.float32))
    assert list(out.columns) == ["is_outlier", "outlier_score"]
    top = set(out["outlier_score"].nlargest(3).index)
    assert top == set(far)
    assert out.loc[far, "is_outlier"].all()
    assert out["is_outlier"].sum() <= 3 + 0.02 * n
    s = finder.summary()
    assert s["outliers"] == out["is_outlier"].sum() and s["combine"] == "mean"
    c = finder.components
    assert set(c.columns) == {"knn_distance", "z_log_influence", "z_knn_distance"}
    np.testing.assert_allclose(out["outlier_score"], (c["z_log_influence"] + c["z_knn_distance"]) / 2)
    out_max = Outliers(k=5, combine="max").find(table, emb.astype(np.float32))
    assert set(out_max["outlier_score"].nlargest(3).index) == set(far)


def test_outliers_error_rows_get_nan():
    rng = np.random.default_rng(5)
    table = scores(np.exp(rng.normal(size=30)))
    table.loc[3, ["influence", "log_influence"]] = np.nan
    table.loc[3, "error"] = "bad mode"
    emb = rng.normal(size=(29, 4)).astype(np.float32)
    out = Outliers(k=3).find(table, emb)
    assert np.isnan(out.loc[3, "outlier_score"]) and not out.loc[3, "is_outlier"]
    assert out["outlier_score"].notna().sum() == 29


# -- fairness ----------------------------------------------------------------------------------------------
def test_fairness_flags_planted_skew():
    rng = np.random.default_rng(6)
    n = 1000
    group = np.where(rng.random(n) < 0.3, "b", "a")
    log_inf = rng.normal(size=n) + 0.8 * (group == "b")  # group b atypical: more influential
    sex = rng.choice(["f", "m"], size=n)
    table = scores(np.exp(log_inf), group=group, sex=sex)
    audit = Fairness(["group", "sex"], top_k=100)
    res = audit.find(table)
    b = res[(res["column"] == "group") & (res["group"] == "b")].iloc[0]
    assert b["chi2_p"] < 0.01 and b["binom_p_adj"] < 0.01 and b["significant"] and b["ratio"] > 1.5
    assert b["log_influence_q50"] > res[(res["column"] == "group") & (res["group"] == "a")].iloc[0]["log_influence_q50"]
    assert {"share", "top_share", "top_count", "log_influence_q05", "log_influence_q95"} <= set(res.columns)
    s = audit.summary()
    assert s["group.flagged"] and s["group.chi2_p"] < 0.01 and s["any_flagged"]
    assert s["group.top_k"] == 100 and s["group.max_ratio"] == pytest.approx(b["ratio"])
    text = audit.text()
    assert "group: among the 100 most influential of 1000 samples" in text and "differ" in text
    assert "'b'" in text and "significant after Holm" in text


def test_fairness_false_alarm_rate_on_balanced_assignments():
    rng = np.random.default_rng(7)
    n, k, alpha = 1000, 100, 0.05
    top = np.zeros(n, dtype=bool)
    top[np.argsort(-rng.normal(size=n))[:k]] = True
    alarms = []
    for _ in range(100):
        codes = rng.permutation(np.arange(n) % 3)  # three balanced groups, independent of influence
        alarms.append(share_test(codes, top, 3)[1] < alpha)
    assert 0.02 <= np.mean(alarms) <= 0.08
    # the same through the table API for a few repeats (slower path, same numbers)
    table = scores(np.exp(rng.normal(size=n)))
    codes = rng.permutation(np.arange(n) % 3)
    table["g"] = codes
    res = Fairness("g", top_k=k).find(table)
    top_mask = (table["influence_rank"].astype(int) <= k).to_numpy()
    assert res["chi2_p"].iloc[0] == pytest.approx(share_test(codes, top_mask, 3)[1])


def test_adjust_pvalues_matches_statsmodels():
    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
    p = np.array([0.01, 0.04, 0.03, 0.2, 0.001, 0.5])
    for ours, theirs in (("holm", "holm"), ("bh", "fdr_bh")):
        np.testing.assert_allclose(adjust_pvalues(p, ours), multipletests(p, method=theirs)[1])


# -- bad input ---------------------------------------------------------------------------------------------
def test_bad_input_gives_clear_errors():
    table = scores(np.exp(np.random.default_rng(8).normal(size=10)), grp=["a", "b"] * 5)
    emb = np.random.default_rng(8).normal(size=(10, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="lacks column"):
        Outliers(k=2, combine="mean").find(table.drop(columns=["log_influence"]), emb)
    with pytest.raises(ValueError, match=r"lacks column.*'race'"):
        Fairness("race").find(table)
    with pytest.raises(ValueError, match="empty"):
        Duplicates().find(table.iloc[:0], emb[:0])
    with pytest.raises(ValueError, match="empty"):
        Fairness("grp").find(table.iloc[:0])
    with pytest.raises(ValueError, match="9 embeddings for 10"):
        Outliers(k=2).find(table, emb[:9])
    with pytest.raises(ValueError, match="embeddings are required"):
        Outliers().find(table, None)
    with pytest.raises(ValueError, match="not in the scores table"):
        align_embeddings(table, emb, [f"x{i}" for i in range(10)], "test")
    with pytest.raises(ValueError, match=r"images \(exact and near-duplicates\) and/or embeddings"):
        Duplicates().find(table)
    with pytest.raises(ValueError, match="near='image' needs images"):
        Duplicates(near="image").find(table, emb)
    with pytest.raises(ValueError, match="near='both' needs embeddings"):
        Duplicates(near="both").find(table, None, images=np.zeros((10, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match="near must be one of"):
        Duplicates(near="pixels")
    with pytest.raises(ValueError, match="9 images for 10"):
        Duplicates().find(table, emb, images=np.zeros((9, 1, 8, 8), np.float32))
    for bad in ({"threshold": 1.2}, {"k": 0}, {"max_shift": 0.5}, {"min_crop": 0.0}, {"thumb_size": 1}):
        with pytest.raises(ValueError):
            ImageMatch(**bad)
    assert Duplicates(image={"ratio": 0.0, "k": 3}).image == ImageMatch(ratio=0.0, k=3)  # YAML-style mapping
    with pytest.raises(TypeError):
        Duplicates(image={"radius": 2})
    with pytest.raises(ValueError, match="ImageMatch"):
        Duplicates(image=0.99)
    with pytest.raises(ValueError, match="threshold"):
        Duplicates(threshold=1.5)
    with pytest.raises(ValueError, match="image_max_samples"):
        Duplicates(image_max_samples=-1)
    with pytest.raises(ValueError, match="DataFrame"):
        Duplicates().find([1, 2], emb)
    with pytest.raises(RuntimeError, match="before summary"):
        Outliers().summary()


# -- on the real scorer ------------------------------------------------------------------------------------
def test_findings_on_scorer_output():
    from influencegate import InfluenceConfig, InfluenceScorer
    from influencegate.data import load_images
    from influencegate.data.dataset import ImageDataset
    from influencegate.models import SmallCNN

    digits = load_images("digits")
    images = torch.cat([digits.images[:200], digits.images[:3]])  # 3 exact copies
    ids = digits.sample_ids[:200] + ["copy0", "copy1", "copy2"]
    ds = ImageDataset.from_tensors(images, ids)
    torch.manual_seed(0)
    scorer = InfluenceScorer(SmallCNN(), InfluenceConfig(rank=8, draws=2, curvature="kfac", progress=False)).fit(ds)
    table = scorer.score(ds)
    emb = scorer.embeddings(ds)
    dup = Duplicates().find(table, emb, images=ds.images)
    by_id = dup.set_index(table["sample_id"])
    for c in range(3):  # an exact copy shares its source's group and is never the canonical member
        assert by_id.loc[f"copy{c}", "duplicate_group"] == by_id.loc[ids[c], "duplicate_group"] >= 0
        assert by_id.loc[f"copy{c}", "is_duplicate"]
    assert Duplicates(near="none").find(table, None, images=ds.images)["is_duplicate"].sum() == 3
    out = Outliers().find(table, emb)
    assert out["outlier_score"].notna().all()


def test_core_does_not_import_mlops_stack():
    code = ("import sys, influencegate.findings; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('zenml', 'mlflow', 'great_expectations', 'evidently')]; print(bad); sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_duplicates_centre_embeddings_before_cosine():
    """A shared offset (as in SSL embeddings) makes every raw cosine ~1; centring restores the planted pair."""
    rng = np.random.default_rng(9)
    emb = rng.normal(size=(50, 8)).astype(np.float32)
    emb[49] = emb[3] + 0.01 * rng.normal(size=8)
    emb += 100.0  # common direction
    table = scores(np.exp(rng.normal(size=50)))
    raw = Duplicates(threshold=0.99, center=False).find(table, emb)
    assert raw["duplicate_group"].nunique() == 1 and (raw["duplicate_group"] == 0).all()
    centred = Duplicates(threshold=0.99).find(table, emb)
    assert sorted(table["sample_id"][centred["duplicate_group"] >= 0]) == ["s0003", "s0049"]


@pytest.mark.parametrize("index", ["faiss-flat", "faiss-hnsw", "faiss-ivf"])
def test_faiss_index_finds_what_the_exact_search_finds(index):
    rng = np.random.default_rng(11)
    emb = rng.normal(size=(600, 24)).astype(np.float32)
    emb[500:520] = emb[:20] + 0.01 * rng.normal(size=(20, 24)).astype(np.float32)  # 20 planted near copies
    exact_s, exact_i = knn_cosine(emb, 5)
    faiss_s, faiss_i = knn_cosine(emb, 5, index=index)
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(exact_i, faiss_i)])
    # IVF on 600 structureless points (15 cells, 8 searched) is the loosest; near copies are found by all
    assert overlap == 1.0 if index == "faiss-flat" else overlap >= (0.8 if index == "faiss-ivf" else 0.95)
    if index == "faiss-flat":
        np.testing.assert_allclose(faiss_s, exact_s, atol=1e-5)
    ei, ej, _ = cosine_pairs(emb, 0.99)
    fi, fj, _ = cosine_pairs(emb, 0.99, index=index)
    assert list(zip(fi, fj)) == list(zip(ei, ej)) == [(i, 500 + i) for i in range(20)]
    table = scores(np.ones(600))
    assert Outliers(k=5, index=index).find(table, emb)["outlier_score"].notna().all()
    assert Duplicates(index=index, threshold=0.99, near="embedding", center=False).find(table, emb)["is_duplicate"].sum() == 20
