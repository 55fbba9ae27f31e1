"""Statistics of a scores table, one module for both audits: the robust z-score, the high-influence flag, the
flat summary the gate validates (`summary_stats`, images or pairs) and the AUROC against known corruption.

Pure numbers (numpy, pandas, scikit-learn), below every engine (influence, ecif, findings use it): the CLI, the workflows and the ZenML steps all call these, so the
numbers in a parquet file, in MLflow and in the gate are computed once, the same way.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

#: Robust z-score of log_influence above which a sample is "high influence" (Iglewicz & Hoaglin's 3.5:
#: on Gaussian data about 1 sample in 2,000 passes it, so a large fraction signals a heavy upper tail).
HIGH_INFLUENCE_Z = 3.5
#: Quantiles of log_influence written into the summary (the gate bounds them; GE 1.24 cannot serialise
#: its own quantile expectation, see docs/design.md section 6).
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
#: ``flag_rule["flag_rule"]`` of ECIF flags calibrated on a clean reference set (`influencegate.ecif.scorer`).
REFERENCE_FLAG_RULE = "combined_above_reference_quantile"
#: The score column of each kind of scores table: an image audit's, a pair audit's.
SCORE_COLUMNS = {"images": "influence", "pairs": "misalignment_score"}


def robust_scale(values: np.ndarray) -> tuple[float, float]:
    """(median, 1.4826 x MAD) of finite values (the MAD scaled to a Gaussian's standard deviation; same units
    as the values). Callers decide what a zero scale means."""
    x = np.asarray(values, dtype=np.float64)
    median = float(np.median(x))
    return median, 1.4826 * float(np.median(np.abs(x - median)))


def robust_z(values: pd.Series) -> pd.Series:
    """(x - median) / (1.4826 * MAD) over the non-null values; NaN stays NaN; 0 when MAD is 0. Unitless."""
    x = pd.to_numeric(values, errors="coerce").astype(float)
    finite = x[np.isfinite(x)]
    if finite.empty:
        return pd.Series(np.nan, index=x.index)
    median, mad = robust_scale(finite.to_numpy())
    if mad <= 0:
        return (x - median) * 0.0
    return (x - median) / mad


#: chi-square quantile (of D degrees of freedom) beyond which `robust_fit` leaves a row out of its final fit:
#: Rousseeuw & van Driessen's reweighting cut for the minimum covariance determinant.
REWEIGHT_QUANTILE = 0.975


def shrunk_fit(x: np.ndarray, shrink: float) -> tuple[np.ndarray, np.ndarray]:
    """(mean D, precision D x D) of the rows of x (M x D, M >= 2): the inverse of the covariance shrunk towards
    (trace / D) I by `shrink` (pseudo-inverse, so all-constant columns give 0 rather than an error)."""
    cov = np.atleast_2d(np.cov(x, rowvar=False))
    cov = (1.0 - shrink) * cov + shrink * np.trace(cov) / len(cov) * np.eye(len(cov))
    return x.mean(axis=0), np.linalg.pinv(cov)


def squared_distances(x: np.ndarray, centre: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """M squared Mahalanobis distances (x - centre)^T P (x - centre) of the rows of x (M x D), >= 0."""
    c = x - centre
    return np.maximum(np.einsum("ij,jk,ik->i", c, precision, c), 0.0)


def central_rows(x: np.ndarray, h: int) -> np.ndarray:
    """Indices of the h rows of x (M x D) nearest the coordinatewise median, in units of each column's
    1.4826 MAD (its standard deviation where the MAD is 0; a constant column is left out): the start."""
    median = np.median(x, axis=0)
    scale = 1.4826 * np.median(np.abs(x - median), axis=0)
    scale = np.where(scale > 0, scale, x.std(axis=0))
    z = np.divide(x - median, scale, out=np.zeros_like(x), where=scale > 0)
    return np.argpartition(np.einsum("ij,ij->i", z, z), h - 1)[:h]


def robust_fit(x: np.ndarray, shrink: float = 0.1, support: float = 1.0, steps: int = 0,
               quantile: float = REWEIGHT_QUANTILE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre D, precision D x D, inliers M bools) of the rows of x (M x D), `shrunk_fit` throughout.
    support = 1 or steps = 0: the classical fit of all rows (every row an inlier). Otherwise an MCD-like fit
    from one deterministic start: the h = ceil(support M) `central_rows`; `steps` concentration steps (fit the
    h rows, keep the h nearest by that fit); the squared distances scaled so that their median is chi2_D's
    (consistency); the rows at or below chi2_D's `quantile` are the inliers, refit once (reweighting)."""
    from scipy.stats import chi2

    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2 or not 0 <= shrink <= 1 or not 0 < support <= 1 or int(steps) < 0 \
            or not 0 < quantile < 1:
        raise ValueError(f"robust_fit: need M x D with M >= 2, shrink in [0, 1], support in (0, 1], steps >= 0 "
                         f"and quantile in (0, 1), got {x.shape}, {shrink}, {support}, {steps}, {quantile}")
    h = max(x.shape[1] + 1, int(np.ceil(support * len(x))))
    if h >= len(x) or int(steps) == 0:
        return (*shrunk_fit(x, shrink), np.ones(len(x), dtype=bool))
    rows = central_rows(x, h)
    for _ in range(int(steps)):
        d2 = squared_distances(x, *shrunk_fit(x[rows], shrink))
        rows = np.argpartition(d2, h - 1)[:h]
    d2 = squared_distances(x, *shrunk_fit(x[rows], shrink))
    median = float(np.median(d2))
    inliers = d2 * chi2.ppf(0.5, x.shape[1]) / median <= chi2.ppf(quantile, x.shape[1]) if median > 0 \
        else np.isin(np.arange(len(x)), rows)
    return (*shrunk_fit(x[inliers], shrink), inliers)


def mahalanobis(x: np.ndarray, shrink: float = 0.1, support: float = 1.0, steps: int = 0,
                quantile: float = REWEIGHT_QUANTILE) -> np.ndarray:
    """M distances sqrt((x - centre)^T S^-1 (x - centre)) of the rows of x (M x D), centre and S from
    `robust_fit` (S shrunk towards (trace / D) I by `shrink` in [0, 1]; invertible for any M >= 2 and D;
    pseudo-inverse when all columns are constant). Unitless. The classical fit (support 1 or steps 0): a foreign
    group of share p inflates S along its own direction until its distance is at most ~sqrt(1 / p) (masking);
    the MCD-like fit (support < 1, steps >= 1) takes centre and S from the central rows only."""
    x = np.asarray(x, dtype=np.float64)
    centre, precision, _ = robust_fit(x, shrink, support, steps, quantile)
    return np.sqrt(squared_distances(x, centre, precision))


def add_high_influence(table: pd.DataFrame, z: float = HIGH_INFLUENCE_Z) -> pd.DataFrame:
    """Copy of the scores table with `is_high_influence` (robust z of log_influence > z; False for error rows),
    placed right after `influence_percentile` as in docs/design.md section 2. Kept if already present."""
    table = table.copy()
    if "is_high_influence" in table.columns:
        return table
    flag = (robust_z(table["log_influence"]) > z).fillna(False).astype(bool)
    position = table.columns.get_loc("influence_percentile") + 1 if "influence_percentile" in table.columns else len(table.columns)
    table.insert(position, "is_high_influence", flag)
    return table


def _number(value: Any) -> float:
    """float(value), NaN for None / non-numbers (so a missing statistic is visible, never zero)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _column(table: pd.DataFrame, name: str) -> pd.Series:
    """The numeric column `name` (non-numbers NaN), all NaN when the table has no such column."""
    if name not in table.columns:
        return pd.Series(np.nan, index=table.index)
    return pd.to_numeric(table[name], errors="coerce")


def table_kind(table: pd.DataFrame) -> str:
    """"pairs" for a pair scores table (it has misalignment_score), else "images"."""
    return "pairs" if SCORE_COLUMNS["pairs"] in table.columns else "images"


def summary_stats(table: pd.DataFrame, truth: pd.Series | None = None,
                  flag_rule: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Distribution statistics and counts of a scores table (images or pairs, see `table_kind`), flat floats.

    Both kinds: n_rows, n_scored (rows with a score and no error), n_errors, error_fraction.
    Images: n_missing_influence (rows without error and without influence), n_negative_influence,
    n_high_influence, high_influence_fraction (over scored rows), influence_mean/std/min/max,
    log_influence_mean/std/min/max, log_influence_q01 ... _q99 (QUANTILES), log_influence_spread (q99 - q50,
    in nats: log of the ratio of the 99th percentile to the median).
    Pairs: n_misaligned, misaligned_fraction (of the scored pairs), misalignment_score_q50/q99,
    clip_score_mean, flags_calibrated (1 when is_misaligned was calibrated on a clean reference set, per
    `flag_rule` from the pair workflow; 0 for the robust z-rule; NaN when unknown) and, with known corruption
    labels `truth` (bool Series by sample_id), misalignment_auroc and clip_score_auroc (the baseline).
    A statistic that cannot be computed (empty data, missing column) is NaN, so the gate fails closed on it.
    """
    kind = table_kind(table)
    n_rows = len(table)
    has_error = table["error"].notna() if "error" in table.columns else pd.Series(False, index=table.index)
    score = _column(table, SCORE_COLUMNS[kind])
    scored = score.notna() & ~has_error
    stats: dict[str, float] = {
        "n_rows": float(n_rows), "n_scored": float(scored.sum()), "n_errors": float(has_error.sum()),
        "error_fraction": float(has_error.mean()) if n_rows else math.nan,
    }
    extra = _pair_stats(table, scored, truth, flag_rule) if kind == "pairs" else _image_stats(table, scored, has_error)
    return {**stats, **extra}


def _image_stats(table: pd.DataFrame, scored: pd.Series, has_error: pd.Series) -> dict[str, float]:
    """The image-audit part of `summary_stats` (influence, log_influence, high influence)."""
    influence, log_influence = _column(table, "influence"), _column(table, "log_influence")
    n_scored = float(scored.sum())
    stats = {"n_missing_influence": float((~has_error & influence.isna()).sum()),
             "n_negative_influence": float((influence < 0).sum())}
    if "is_high_influence" in table.columns:
        high = table["is_high_influence"].fillna(False).astype(bool)
    else:
        high = (robust_z(log_influence) > HIGH_INFLUENCE_Z).fillna(False)
    stats["n_high_influence"] = float((high & scored).sum())
    stats["high_influence_fraction"] = stats["n_high_influence"] / n_scored if n_scored else math.nan
    for name, series in (("influence", influence[scored]), ("log_influence", log_influence[scored])):
        for stat in ("mean", "std", "min", "max"):
            stats[f"{name}_{stat}"] = _number(getattr(series, stat)()) if len(series) else math.nan
    values = log_influence[scored]
    for q in QUANTILES:
        stats[f"log_influence_q{int(round(q * 100)):02d}"] = _number(values.quantile(q)) if len(values) else math.nan
    stats["log_influence_spread"] = stats["log_influence_q99"] - stats["log_influence_q50"]
    return stats


def _pair_stats(table: pd.DataFrame, scored: pd.Series, truth: pd.Series | None,
                flag_rule: Mapping[str, Any] | None) -> dict[str, float]:
    """The pair-audit part of `summary_stats` (misalignment flags and scores, CLIP score, AUROCs)."""
    score = _column(table, "misalignment_score")
    n_scored = float(scored.sum())
    flagged = table["is_misaligned"].fillna(False).astype(bool) & scored
    stats = {
        "n_misaligned": float(flagged.sum()),
        "misaligned_fraction": float(flagged.sum()) / n_scored if n_scored else math.nan,
        "misalignment_score_q50": float(score[scored].quantile(0.5)) if n_scored else math.nan,
        "misalignment_score_q99": float(score[scored].quantile(0.99)) if n_scored else math.nan,
        "clip_score_mean": float(_column(table, "clip_score")[scored].mean()) if n_scored else math.nan,
        "flags_calibrated": float(flag_rule.get("flag_rule") == REFERENCE_FLAG_RULE) if flag_rule else math.nan,
    }
    if truth is not None:
        stats["misalignment_auroc"] = misalignment_auroc(table, truth)
        stats["clip_score_auroc"] = misalignment_auroc(table, truth, "clip_score")
    return stats


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """The one-row summary table the gate validates: the columns of `summary_stats`."""
    return pd.DataFrame([summary_stats(table)])


def summary_with_findings(table: pd.DataFrame, findings_metrics: Mapping[str, float]) -> dict[str, float]:
    """`summary_stats` of the table plus the findings' metrics (what the gate's summary table holds)."""
    return {**summary_stats(table), **{k: float(v) for k, v in findings_metrics.items()}}


def labelled_scores(table: pd.DataFrame, truth: pd.Series, column: str = "misalignment_score"
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(labels bool, scores float) of the scored pairs that have a known corruption label (`truth`: a bool
    Series by sample_id); scores are oriented so that higher = more misaligned (clip_score is negated)."""
    scored = table[table[column].notna()]
    labels = scored["sample_id"].map(truth)
    keep = labels.notna().to_numpy()
    values = scored[column].to_numpy(dtype=float)[keep]
    return labels[keep].astype(bool).to_numpy(), -values if column == "clip_score" else values


def misalignment_auroc(table: pd.DataFrame, truth: pd.Series, column: str = "misalignment_score") -> float:
    """AUROC of `column` (misalignment_score, or clip_score with low = misaligned) against known corruption
    labels `truth` over the scored pairs that have one; NaN when one class is missing."""
    from sklearn.metrics import roc_auc_score

    labels, values = labelled_scores(table, truth, column)
    return float(roc_auc_score(labels, values)) if len(np.unique(labels)) == 2 else math.nan


def known_misalignment(records: pd.DataFrame) -> pd.Series | None:
    """The records' `is_misaligned` labels (bool, by sample_id) when the data carries them, else None."""
    if "is_misaligned" not in records.columns:
        return None
    labels = records.dropna(subset=["is_misaligned"]).drop_duplicates("sample_id")
    return pd.Series(labels["is_misaligned"].astype(bool).to_numpy(), index=labels["sample_id"].astype(str))
