"""The outliers' joint distance against a clean reference version (findings.outlier_reference): checked
against the formula written out with scipy, its scale fallback for one-valued coordinates, and what it is
for: a version's foreign group neither masks itself nor moves the other rows' scores."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis

from influencegate.findings.outlier_reference import (ALPHA, LOG_EPS, SCALE_FLOOR, flag_threshold, reference_scale,
                                                     reference_score)
from influencegate.findings.outliers import OUTLIER_Z, joint_score


def gaussian(n: int, seed: int, d: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, d))
    base[:, 1] += 0.8 * base[:, 0]  # a correlated pair
    return {f"c{i}": base[:, i] for i in range(d)}


def test_reference_score_is_the_written_out_formula():
    version, reference = gaussian(50, 1), gaussian(80, 2)
    version["c2"][:3] = 40.0  # beyond the clip
    clip, shrink = 3.0, 0.2
    scales = {n: (np.median(r), 1.4826 * np.median(np.abs(r - np.median(r)))) for n, r in reference.items()}
    zv = np.column_stack([np.clip((version[n] - m) / s, -clip, clip) for n, (m, s) in scales.items()])
    zr = np.column_stack([np.clip((reference[n] - m) / s, -clip, clip) for n, (m, s) in scales.items()])
    cov = np.cov(zr, rowvar=False)
    cov = (1 - shrink) * cov + shrink * np.trace(cov) / 4 * np.eye(4)
    inv = np.linalg.inv(cov)
    centre = zr.mean(axis=0)
    log_v = np.log([scipy_mahalanobis(row, centre, inv) + LOG_EPS for row in zv])
    log_r = np.log([scipy_mahalanobis(row, centre, inv) + LOG_EPS for row in zr])
    mid = np.median(log_r)
    expected = (log_v - mid) / (1.4826 * np.median(np.abs(log_r - mid)))
    z, score, own = reference_score(version, reference, clip=clip, shrink=shrink)
    np.testing.assert_allclose(score, expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(own, (log_r - mid) / (1.4826 * np.median(np.abs(log_r - mid))), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(z["c2"][:3], (40.0 - scales["c2"][0]) / scales["c2"][1])  # z itself not clipped


def test_a_one_valued_reference_coordinate_is_scaled_by_its_other_values():
    grey_majority = np.array([1.0] * 7 + [0.9, 0.8, 0.95])  # more than half at one value: MAD 0
    centre, scale = reference_scale(grey_majority)
    assert centre == 1.0 and scale == pytest.approx(1.4826 * np.median([0.1, 0.2, 0.05]))
    assert reference_scale(np.ones(5)) == (1.0, SCALE_FLOOR)


def test_a_foreign_group_is_flagged_and_does_not_move_the_other_rows():
    reference = gaussian(400, 3)
    version = gaussian(400, 4)
    group = np.arange(350, 400)  # 12.5% foreign, tight, 5 spreads off on two coordinates
    for name in ("c0", "c3"):
        version[name][group] = 5.0 + 0.1 * np.random.default_rng(5).normal(size=len(group))
    score = reference_score(version, reference)[1]
    assert (score[group] > OUTLIER_Z).all() and (score[:350] > OUTLIER_Z).mean() <= 0.01
    alone = reference_score({n: v[:350] for n, v in version.items()}, reference)[1]
    np.testing.assert_allclose(score[:350], alone)  # every row scored against the reference only
    classical = joint_score(version, 0.1, 1.0, 0)[1]  # the version on its own: the group masks itself
    assert (classical[group] > OUTLIER_Z).mean() < 0.5


def test_reference_score_refuses_mismatched_or_tiny_references():
    version = gaussian(10, 6)
    with pytest.raises(ValueError, match="coordinates"):
        reference_score(version, {"c0": np.zeros(5)})
    with pytest.raises(ValueError, match="at least 2 rows"):
        reference_score(version, {n: v[:1] for n, v in version.items()})


def test_the_flag_threshold_is_the_larger_of_z_and_the_references_own_quantile():
    own = np.arange(1000) / 100.0  # the reference rows' own scores, 0.00 .. 9.99
    assert flag_threshold(own, OUTLIER_Z) == pytest.approx(np.quantile(own, 1 - ALPHA))
    assert flag_threshold(np.zeros(50), OUTLIER_Z) == OUTLIER_Z
    # the reference scored against itself (an appended version's old rows): at most ALPHA of it flagged,
    # while a cut at z alone flags its far mode (2% of the rows 20 spreads off on every coordinate)
    reference = gaussian(2000, 9)
    far = np.random.default_rng(10).random(2000) < 0.02
    for values in reference.values():
        values[far] += 20.0
    _, score, own = reference_score(reference, reference, clip=None)
    np.testing.assert_allclose(score, own)
    assert (score > flag_threshold(own, OUTLIER_Z)).mean() <= ALPHA + 1e-12
    assert (score > OUTLIER_Z).mean() > 2 * ALPHA


def textured(n: int, seed: int, side: int = 16) -> np.ndarray:
    """n x 3 x side x side photo-like images in [0, 1]: smooth random fields with some colour."""
    from scipy.ndimage import gaussian_filter
    rng = np.random.default_rng(seed)
    fields = gaussian_filter(rng.normal(size=(n, 3, side, side)), sigma=(0, 0, 2, 2))
    grey = fields.mean(axis=1, keepdims=True)
    x = 0.5 + 2.0 * (0.8 * grey + 0.2 * fields)
    return np.clip(x, 0, 1).astype(np.float32)


def test_the_outliers_finding_scores_against_a_kept_reference_version(tmp_path) -> None:
    import pandas as pd

    from influencegate.findings.appended import Previous
    from influencegate.findings.image_stats import STATISTICS, stream_statistics
    from influencegate.findings.outliers import Outliers
    from influencegate.findings.registry import FindingsConfig
    from influencegate.findings.run import find_all
    from influencegate.workflows import version_state

    rng = np.random.default_rng(12)
    clean = textured(300, 13)
    ids = [f"r{i}" for i in range(len(clean))]
    table = pd.DataFrame({"sample_id": ids, "log_influence": rng.normal(size=len(clean))})
    kept = find_all(table, rng.normal(size=(len(clean), 8)), clean, {"duplicates": None},
                    previous=Previous.empty(len(clean)))  # an audit with a resume directory keeps its state
    version_state.save_findings(str(tmp_path), ids, kept.state)

    new = np.concatenate([textured(280, 14), rng.uniform(0, 1, (40, 3, 16, 16)).astype(np.float32)])  # 12.5% noise
    new_table = pd.DataFrame({"sample_id": [f"n{i}" for i in range(len(new))]})
    emb = rng.normal(size=(len(new), 8))
    found = find_all(new_table, emb, new, {"duplicates": None, "outliers": {"reference": str(tmp_path)}})
    score = found.table["outlier_score"].to_numpy()
    stats_new, stats_ref = stream_statistics(new), stream_statistics(clean)
    _, expected, own = reference_score({s: stats_new[s].to_numpy() for s in STATISTICS},
                                       {s: stats_ref[s].to_numpy() for s in STATISTICS})
    np.testing.assert_allclose(score, expected, rtol=1e-9, atol=1e-9)
    flagged = found.table["is_outlier"].to_numpy()
    np.testing.assert_array_equal(flagged, score > flag_threshold(own, OUTLIER_Z))
    assert flagged[280:].all() and flagged[:280].mean() <= 0.02
    assert "reference version" in found.texts["outliers"] and "300 samples" in found.texts["outliers"]
    direct = Outliers(reference=str(tmp_path))
    direct.find(new_table, emb, images=new)
    assert direct.components["knn_distance"].isna().all()  # not in the score, no state to keep: not searched
    alone = find_all(new_table, emb, new, {"duplicates": None})  # the version as its own reference: masked
    assert alone.table["is_outlier"].to_numpy()[280:].mean() < 0.5

    with pytest.raises(ValueError, match="has no statistics.npz"):  # when the config is read, before any scoring
        FindingsConfig(outliers={"reference": str(tmp_path / "nowhere")})
    with pytest.raises(ValueError, match="give the images"):
        Outliers(reference=str(tmp_path)).find(new_table, emb)
    from influencegate.data.npz import write_npz
    odd = tmp_path / "odd"
    odd.mkdir()
    write_npz(odd / "statistics.npz", statistics=np.zeros((5, 2)), statistics_names=np.asarray(["a", "b"]))
    with pytest.raises(ValueError, match="kept the statistics"):
        Outliers(reference=str(odd)).find(new_table, emb, images=new)
    write_npz(odd / "statistics.npz", statistics=np.zeros((5, len(STATISTICS))))  # no names kept
    with pytest.raises(ValueError, match="kept the statistics"):
        Outliers(reference=str(odd)).find(new_table, emb, images=new)
    write_npz(odd / "statistics.npz", statistics=np.full((5, len(STATISTICS)), np.nan),
              statistics_names=np.asarray(STATISTICS))
    with pytest.raises(ValueError, match="not finite"):
        Outliers(reference=str(odd)).find(new_table, emb, images=new)
    FindingsConfig(outliers={"reference": "approved"})  # the last approved version: the pipeline resolves it
    with pytest.raises(ValueError, match="resolved by the audit pipeline"):
        Outliers(reference="approved").find(new_table, emb, images=new)
    with pytest.raises(ValueError, match="reference needs combine 'joint'"):
        FindingsConfig(outliers={"combine": "mean", "reference": str(tmp_path)})
