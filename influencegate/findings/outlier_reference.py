"""The outliers' joint distance measured against a clean reference version (the last approved one) instead of
the version itself: centre, scales and covariance come from rows known to be clean, so a foreign group of the
new version can neither inflate them (masking) nor pass as one of the version's own modes, and a mode the
reference has (dark or white backgrounds, grey photos, fine texture) is not flagged.

Per coordinate (an M-vector of the version, an R-vector of the reference): z = (x - median_ref) / scale_ref,
scale_ref = 1.4826 MAD of the reference; where that is 0 (more than half of the reference at one value: grey
images' colourfulness, unclipped images' clipped share), 1.4826 times the median absolute deviation of the
reference rows off that value, else SCALE_FLOOR. The z-scores are clipped to [-clip, clip], the covariance is
the reference rows' (shrunk by `shrink`, statistics.shrunk_fit), and
score = (log(D + LOG_EPS) - median_ref) / scale_ref of the reference rows' own log(D + LOG_EPS): a robust
z-score against the reference's distances. Unitless. A row is flagged above `flag_threshold`: the larger of the
outliers' z cut and the (1 - ALPHA) quantile of the reference rows' own scores, a conformal bound: a clean row
exchangeable with the reference exceeds it with probability at most about ALPHA, whatever the statistics' tails.
"""
from __future__ import annotations

import numpy as np

from influencegate.data import storage
from influencegate.data.npz import read_npz
from influencegate.findings.appended import STATISTICS_FILE
from influencegate.statistics import robust_scale, shrunk_fit, squared_distances

#: the reference fit's settings, chosen on the tuning split (benchmarks/outliers_reference.py, REFERENCE_RULE)
REFERENCE_CLIP = 6.0
REFERENCE_SHRINK = 0.1
#: the share of clean rows flagged at most (about), when they are exchangeable with the reference's
#: (flag_threshold): set without tuning, after the held-out fresh3 and fresh4 flagged 3.4-4.0% of clean versions
#: at z 3.5 alone, before fresh5 (README)
ALPHA = 0.005
#: the reference that names the dataset's last approved version: resolved by the audit pipeline (its findings
#: step looks the version up among the recorded approvals), never read here
APPROVED = "approved"
#: a coordinate constant over the whole reference gets this scale: any departure from it is far (unitless)
SCALE_FLOOR = 1e-6
#: added to the joint distance before its log (unitless), here and in outliers.joint_score
LOG_EPS = 1e-3
MAD_TO_SIGMA = 1.4826


def reference_scale(values: np.ndarray) -> tuple[float, float]:
    """(median, scale) of a reference coordinate (module docstring): 1.4826 MAD; when that is 0, 1.4826 times
    the median of the nonzero absolute deviations; when every value is equal, SCALE_FLOOR."""
    values = np.asarray(values, dtype=np.float64)
    centre, scale = robust_scale(values)
    if scale <= 0:
        deviation = np.abs(values - centre)
        moved = deviation[deviation > 0]
        scale = MAD_TO_SIGMA * float(np.median(moved)) if len(moved) else 0.0
    return centre, max(scale, SCALE_FLOOR)


def flag_threshold(reference_scores: np.ndarray, z: float, alpha: float = ALPHA) -> float:
    """The score above which a row is flagged: max(z, the (1 - alpha) quantile of the reference rows' own
    scores, R-vector). Unitless."""
    return max(float(z), float(np.quantile(reference_scores, 1.0 - alpha)))


def reference_score(coords: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                    clip: float | None = REFERENCE_CLIP, shrink: float = REFERENCE_SHRINK
                    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """({name: z-score against the reference, M-vector}, M scores, the reference rows' own R scores) of the
    version's coordinates (name -> M-vector of finite values) against the reference's (the same names ->
    R-vectors, R >= 2); module docstring. ValueError when the names differ or the reference has fewer than 2
    rows."""
    if list(coords) != list(reference):
        raise ValueError(f"outliers: the reference has the coordinates {list(reference)}, the version {list(coords)}")
    rows = {len(np.asarray(v)) for v in reference.values()}
    if len(rows) != 1 or rows.pop() < 2:
        raise ValueError("outliers: the reference needs at least 2 rows, the same number in every coordinate")
    z, z_ref = {}, []
    for name, values in coords.items():
        centre, scale = reference_scale(reference[name])
        z[name] = (np.asarray(values, dtype=np.float64) - centre) / scale
        z_ref.append((np.asarray(reference[name], dtype=np.float64) - centre) / scale)
    version, ref = np.column_stack(list(z.values())), np.column_stack(z_ref)
    if clip is not None:
        version, ref = np.clip(version, -clip, clip), np.clip(ref, -clip, clip)
    centre, precision = shrunk_fit(ref, shrink)
    log_version = np.log(np.sqrt(squared_distances(version, centre, precision)) + LOG_EPS)
    log_reference = np.log(np.sqrt(squared_distances(ref, centre, precision)) + LOG_EPS)
    middle, scale = reference_scale(log_reference)
    return z, (log_version - middle) / scale, (log_reference - middle) / scale


def missing_reference(location: str) -> ValueError:
    """The error for a reference location without STATISTICS_FILE (credentials redacted)."""
    return ValueError(f"outliers: the reference {storage.redact(location)} has no {STATISTICS_FILE}: audit the "
                      "reference version with its images and a resume directory (--resume-dir), and name that "
                      "directory")


def check_reference(location: str) -> None:
    """ValueError (missing_reference) unless `location` holds STATISTICS_FILE or is APPROVED: checked when the
    config is read, so that a wrong reference stops an audit before its scoring, not after."""
    if location != APPROVED and not storage.exists(storage.join(storage.normalise(location), STATISTICS_FILE)):
        raise missing_reference(location)


def load_reference(location: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """{name: R-vector} of the image statistics `names` that an audited version kept in its resume directory
    `location` (STATISTICS_FILE, written by an audit with images and a resume directory; local path or URL).
    ValueError, naming the location with its credentials redacted, when it holds no such file, other
    statistics, fewer than 2 rows or values that are not finite."""
    where = storage.redact(location)
    stored = read_npz(storage.join(storage.normalise(location), STATISTICS_FILE))
    if stored is None or "statistics" not in stored:
        raise missing_reference(location)
    kept = [str(n) for n in stored.get("statistics_names", np.zeros(0, dtype=str)).tolist()]
    if kept != list(names) or len(stored["statistics"]) < 2:
        raise ValueError(f"outliers: the reference {where} kept the statistics {kept} of "
                         f"{len(stored['statistics'])} samples; {list(names)} of at least 2 are needed")
    values = np.asarray(stored["statistics"], dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"outliers: the reference {where} has statistics that are not finite")
    return {name: values[:, i] for i, name in enumerate(names)}
