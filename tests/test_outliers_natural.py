"""The outliers benchmark's planted versions and measures (benchmarks/outliers_natural.py), on small inputs:
each kind is what its name says, the saturated and blurred images leave no clean twin behind, and the top-5%
share ranks a kind among the originals only."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import outliers_natural as on  # noqa: E402

from influencegate.findings.unusable import Unusable  # noqa: E402


def smooth_patches(n: int, side: int = 32, seed: int = 0) -> np.ndarray:
    """n textured RGB patches in [0.2, 0.8], n x 3 x side x side."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0.2, 0.8, size=(n, 3, side // 4, side // 4))
    return on.resize(small, side, antialias=False).astype(np.float32)


def test_photo_version_plants_each_kind_and_takes_the_sources_out():
    background = smooth_patches(200)
    pixels, kinds = on.photo_version(background, seed=0, planted=True)
    m = round(on.PLANT_SHARE * 200)
    assert {k: int((kinds == k).sum()) for k in on.PHOTO_KINDS} == {k: m for k in on.PHOTO_KINDS}
    assert (kinds == "original").sum() == 200 - 2 * m  # the saturated and blurred images' sources left
    originals = pixels[kinds == "original"].reshape(200 - 2 * m, -1)
    assert len({row.tobytes() for row in originals} & {row.tobytes() for row in background.reshape(200, -1)}) \
        == 200 - 2 * m
    stats = Unusable().measure(pixels)
    assert (stats.loc[kinds == "blank", "pixel_std"] < 1e-6).all()
    assert (stats.loc[kinds == "saturated", "clipped_fraction"] > 0.5).all()
    assert stats.loc[kinds == "noise", "sharpness"].min() > stats.loc[kinds == "original", "sharpness"].max()
    assert stats.loc[kinds == "blur", "sharpness"].max() < stats.loc[kinds == "original", "sharpness"].median()
    clean, clean_kinds = on.photo_version(background, seed=0, planted=False)
    assert clean is background and (clean_kinds == "original").all()


def test_contaminated_version_is_one_eighth_noise_over_the_whole_background():
    background = smooth_patches(140)
    pixels, kinds = on.contaminated_version(background, seed=0)
    assert (kinds == on.CONTAMINANT).mean() == on.CONTAMINATION and (kinds == "original").sum() == 140
    np.testing.assert_array_equal(pixels[:140], background)
    noise = Unusable().measure(pixels[kinds == on.CONTAMINANT])
    assert noise["sharpness"].min() > Unusable().measure(background)["sharpness"].max()


def test_digits_version_adds_grey_photos_at_8_px():
    pixels, kinds = on.digits_version(smooth_patches(60), seed=1, planted=True)
    assert pixels.shape[1:] == (1, 8, 8) and (kinds == "original").sum() == 1797
    assert (kinds == "photos").sum() == round(on.PLANT_SHARE * 1797)
    assert pixels.min() >= 0 and pixels.max() <= 1


def test_in_top_ranks_a_kind_among_the_originals_only():
    kinds = np.array(["original"] * 95 + ["a"] * 3 + ["b"] * 2, dtype=object)
    score = np.concatenate([np.arange(95.0), [200.0, 201.0, 50.0], [300.0, 301.0]])
    # pool of a: 95 originals + 3 -> top round(0.05 * 98) = 5: b's higher scores do not take places
    assert on.in_top(score, kinds, "a") == 2 / 3
    assert on.in_top(score, kinds, "b") == 1.0
    planted_reasons = pd.Series([None] * 100)
    table = pd.DataFrame({"sample_id": [f"s{i}" for i in range(100)], "log_influence": score / 100})
    emb = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    pixels = np.random.default_rng(1).uniform(size=(100, 1, 8, 8))
    variants = on.variant_scores(table, emb, Unusable().measure(pixels), planted_reasons, pixels)
    assert set(variants) == set(on.VARIANTS) and all(len(v) == 100 for v in variants.values())
    np.testing.assert_allclose(variants["mean|unusable"], variants["mean"])  # nothing unusable: unchanged


def test_covariance_rule_drops_a_candidate_that_flags_a_clean_version_over_the_bar():
    classical, robust = on.covariance_name(*on.CLASSICAL), on.covariance_name(0.05, 0.75, 2)

    def run(planted: bool, side: int, robust_clean: float) -> dict:
        kind = {"noise": {"in_top5": 1.0, "flagged": 1.0}}
        return {"stage": "tune", "planted": planted, "side": side, "n_per_kind": {"noise": 8} if planted else {},
                "covariance": {classical: {"false_flag": 0.0, **({"noise": {"in_top5": 0.5, "flagged": 0.0}}
                                                                  if planted else {})},
                               robust: {"false_flag": 0.0 if planted else robust_clean,
                                        **(kind if planted else {})}}}
    runs = [run(True, 32, 0.0), run(False, 32, 0.0), run(True, 64, 0.0)]
    assert on.covariance_choice(runs + [run(False, 64, 0.02)], "tune")["picked"] == robust  # at the bar: kept
    assert on.covariance_choice(runs + [run(False, 64, 0.03)], "tune")["picked"] == classical


def test_measure_without_influence_gives_the_covariance_candidates_only():
    rng = np.random.default_rng(2)
    pixels, kinds = on.contaminated_version(smooth_patches(56, side=16), seed=0)
    table = pd.DataFrame({"sample_id": [f"s{i}" for i in range(len(kinds))], "log_influence": np.nan})
    out = on.measure(table, rng.normal(size=(len(kinds), 6)), pixels, kinds)
    assert set(out) == {"n", "n_original", "n_per_kind", "covariance", "score"} and out["n_per_kind"] == {"noise": 8}
    assert set(out["covariance"]) == {on.covariance_name(*c) for c in on.COVARIANCES}
    assert set(out["score"]) == {on.score_name(*c) for c in on.SCORE_CANDIDATES}
    # a clipped candidate at a clip no z-score reaches is the unclipped fit itself
    coords = {f"c{i}": rng.normal(size=len(kinds)) for i in range(3)}
    np.testing.assert_allclose(on.clipped_joint_score(coords, "robust", 1e9),
                               on.joint_score(coords, *on.COVARIANCE_FITS["robust"])[1])


def test_reference_benchmark_pairs_each_version_with_a_clean_version_of_another_seed():
    import outliers_reference as ref  # benchmarks/, on the path above

    def version(direction: str, cut: int, seed: int, planted: bool) -> dict:
        return {"direction": direction, "photos_cut_at": cut, "seed": seed, "planted": planted}

    stage = [version(d, cut, seed, p) for d, cut, seeds in (("photos", 32, (4, 5, 6)), ("photos", 64, (7, 8)),
                                                           ("digits", 32, (4, 5)))
             for seed in seeds for p in (True, False)] + [version("contaminated", 64, 8, True)]
    got = {(v["direction"], v["photos_cut_at"], v["seed"], v["planted"]): ref.reference_of(v, stage) for v in stage}
    assert all(not r["planted"] and r["photos_cut_at"] == key[1] for key, r in got.items())
    assert [got["photos", 32, s, True]["seed"] for s in (4, 5, 6)] == [5, 6, 4]  # the next seed, cyclic
    assert got["photos", 64, 8, False]["seed"] == 7 and got["contaminated", 64, 8, True]["seed"] == 7
    assert got["digits", 32, 5, True] is got["digits", 32, 5, False]  # the digits before the photos were added
    assert got["digits", 32, 5, True]["direction"] == "digits"
