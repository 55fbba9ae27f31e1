"""The joint outlier score's robust centre and covariance (statistics.robust_fit) against scikit-learn's
MinCovDet on Gaussian samples with planted far rows, and the masking it removes: a foreign group of 12.5% that
the classical covariance hides is flagged, while clean Gaussian rows stay unflagged."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.covariance import MinCovDet

from influencegate.findings.outliers import OUTLIER_Z, joint_score
from influencegate.statistics import mahalanobis, robust_fit

MIX = np.array([[1.0, 0, 0, 0], [0.6, 0.8, 0, 0], [0, 0.3, 1, 0], [0.2, 0, 0, 0.5]])


def contaminated(share: float, shift: float, seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """(n x 4 rows: correlated Gaussian inliers and, last, a tight group of share n rows `shift` away; the
    group's indices)."""
    rng = np.random.default_rng(seed)
    far = int(round(share * n))
    inliers = rng.normal(size=(n - far, 4)) @ MIX
    group = np.array([1.0, -1.0, 1.0, 0.5]) * shift + 0.3 * rng.normal(size=(far, 4))
    return np.concatenate([inliers, group]), np.arange(n - far, n)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_robust_fit_keeps_the_inliers_min_cov_det_keeps(seed):
    x, group = contaminated(0.10, 6.0, seed)
    centre, precision, inliers = robust_fit(x, shrink=0.0, support=0.75, steps=2)
    mcd = MinCovDet(support_fraction=0.75, random_state=0).fit(x)
    assert not inliers[group].any() and not mcd.support_[group].any()
    assert (inliers & mcd.support_).sum() / (inliers | mcd.support_).sum() >= 0.98
    np.testing.assert_allclose(centre, mcd.location_, atol=0.05)
    cov = np.linalg.inv(precision)  # up to scale: the score (robust z of log distance) does not see it
    np.testing.assert_allclose(cov / np.trace(cov), mcd.covariance_ / np.trace(mcd.covariance_), atol=0.01)
    assert spearmanr(mahalanobis(x, 0.0, 0.75, 2), mcd.mahalanobis(x)).statistic > 0.999


def test_the_classical_fit_masks_a_large_group_and_the_robust_fit_does_not():
    x, group = contaminated(0.125, 4.0, 3)
    rest = np.setdiff1d(np.arange(len(x)), group)
    classical = mahalanobis(x, 0.0)
    assert classical[group].max() <= np.sqrt(1 / 0.125) + 0.5  # masked: at most ~sqrt(1 / p)
    assert classical[group].min() < classical[rest].max()
    robust = mahalanobis(x, 0.0, 0.75, 2)
    assert robust[group].min() > 2 * robust[rest].max()
    assert robust_fit(x, 0.0)[2].all()  # support 1: every row an inlier (the classical fit)


def test_joint_score_flags_a_contaminating_group_and_spares_clean_rows():
    rng = np.random.default_rng(4)
    clean = {f"c{i}": rng.normal(size=800) for i in range(10)}
    shifted = {name: values.copy() for name, values in clean.items()}
    group = np.arange(700, 800)  # 12.5% foreign: 6 MAD off on three coordinates
    for name in ("c0", "c3", "c7"):
        shifted[name][group] = 6.0 + 0.2 * rng.normal(size=len(group))
    flagged = joint_score(shifted, shrink=0.1, support=0.75, steps=2)[1] > OUTLIER_Z
    assert flagged[group].mean() >= 0.95 and flagged[:700].mean() <= 0.01
    classical = joint_score(shifted, shrink=0.1, support=1.0, steps=0)[1] > OUTLIER_Z
    assert classical[group].mean() < 0.5
    assert (joint_score(clean)[1] > OUTLIER_Z).mean() <= 0.01


def test_robust_fit_refuses_bad_settings():
    x = np.random.default_rng(5).normal(size=(30, 3))
    for kwargs in ({"shrink": 1.5}, {"support": 0.0}, {"steps": -1}, {"quantile": 1.0}):
        with pytest.raises(ValueError, match="robust_fit"):
            robust_fit(x, **kwargs)
    with pytest.raises(ValueError, match="robust_fit"):
        robust_fit(x[:1])


def test_the_covariance_option_reaches_the_outliers_finding():
    import pandas as pd

    from influencegate.findings.outliers import COVARIANCE_FITS, LOG_EPS, Outliers
    from influencegate.findings.registry import FindingsConfig
    from influencegate.findings.run import find_all
    from influencegate.statistics import robust_z
    rng = np.random.default_rng(11)
    x, group = contaminated(0.125, 4.0, 12, n=320)  # the embeddings: a tight 12.5% group 4 spreads away
    emb = np.concatenate([x, rng.normal(size=(320, 4))], axis=1)
    table = pd.DataFrame({"sample_id": [f"s{i}" for i in range(320)], "log_influence": rng.normal(size=320)})
    scores = {}
    for name, fit in COVARIANCE_FITS.items():
        found = find_all(table, emb, None, {"duplicates": None, "outliers": {"covariance": name}})
        direct = Outliers(covariance=name)
        direct.find(table, emb)
        z = direct.components[[f"z_{p}" for p in direct.parts]].to_numpy()  # reference from its coordinates
        expected = robust_z(pd.Series(np.log(mahalanobis(z, *fit) + LOG_EPS))).to_numpy()
        np.testing.assert_allclose(found.table["outlier_score"].to_numpy(), expected, atol=1e-9)
        assert f"({name} covariance)" in found.texts["outliers"]
        scores[name] = expected
    assert not np.allclose(scores["classical"], scores["robust"])
    with pytest.raises(ValueError, match="covariance must be one of"):
        FindingsConfig(outliers={"covariance": "minimum_determinant"})
