"""The combined misalignment score of the pair audit and its calibrated flag (issue 16, item 4).

Each piece of evidence e (oriented so that higher = more misaligned) is known for the audited pairs and,
out of sample, for the clean reference pairs (``influencegate.ecif.evidence``). It is put on the scale of
the clean reference by a robust z-score, z_e = (e - median_ref) / (1.4826 MAD_ref), and the combined score
is the fixed weighted sum  sum_e w_e z_e  (COMBINED_WEIGHTS, chosen on the development seed 100 of
benchmarks/ecif_detection.py, never on its evaluation runs). is_misaligned = combined score above the
threshold of the conformal test at level ``flag_share`` against the clean reference pairs (fewer than a
share flag_share of them pass it). With the group evidence (``influencegate.ecif.groups``, for systematic
errors; never weighted into the sum, which ranks), is_misaligned is the union of two such tests, each at level
flag_share / 2: the combined score's and the group evidence's robust z (so a clean pair exchangeable with the
reference is flagged with probability <= flag_share, by the union bound). Development seed 100 showed why conformal rather than the plain
(1 - flag_share) quantile: with 200 reference pairs, the 5th largest let 2.6-3.8% of the clean training pairs
through at flag_share 0.02.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from influencegate.statistics import robust_scale

#: Weights of the robust z-scores (unitless) by evidence name (``influencegate.ecif.evidence.EVIDENCE``):
#: chosen on development seed 100 by benchmarks/ecif_detection.py --phase dev (results/ecif_detection_dev.json:
#: of the weightings of its grid whose AUROC >= max(ECIF, CLIP score) on all 3 dev runs, the best mean). The
#: reference-head cosine got weight 0 once the reference caption loss (the same heads) was among the candidates.
COMBINED_WEIGHTS: dict[str, float] = {"ecif": 1.0, "clip": 2.0, "reference_clip": 0.0, "reference_caption_loss": 1.0}

Evidence = Mapping[str, tuple[np.ndarray, np.ndarray]]
#: The evidence tested on its own beside the combined score (``calibrated_flags``).
GROUP_EVIDENCE = "group"


def reference_z(values: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(z of values (N,), z of reference (M,)): robust z-scores against the reference's median and
    1.4826 x MAD (unitless); MAD 0 falls back to the reference's standard deviation, then to 1."""
    reference = np.asarray(reference, dtype=np.float64)
    median, scale = robust_scale(reference)
    if not scale > 0:
        scale = float(np.std(reference)) or 1.0
    return (np.asarray(values, dtype=np.float64) - median) / scale, (reference - median) / scale


def combined_score(evidence: Evidence, weights: Mapping[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(combined score of the audited pairs (N,), of the reference pairs (M,)): sum_e w_e z_e over the
    evidence with a non-zero weight (``reference_z`` of each (pairs, reference) pair of arrays).
    KeyError naming a weighted piece of evidence that is missing."""
    weights = COMBINED_WEIGHTS if weights is None else weights
    used = {name: w for name, w in weights.items() if w}
    missing = sorted(set(used) - set(evidence))
    if missing:
        raise KeyError(f"no evidence {missing}; have {sorted(evidence)}")
    parts = [(w, *reference_z(*evidence[name])) for name, w in used.items()]
    return sum(w * z for w, z, _ in parts), sum(w * z_ref for w, _, z_ref in parts)


def calibrated_threshold(reference_scores: np.ndarray, flag_share: float) -> float:
    """The threshold t of the conformal test at level flag_share: a score s > t exactly when its conformal
    p-value (1 + #{reference >= s}) / (M + 1) is <= flag_share, so that a clean pair exchangeable with the M
    reference pairs is flagged with probability <= flag_share (and fewer than flag_share x M of the
    reference pass). t = the (k+1)-th largest reference score, k = floor(flag_share (M + 1)) - 1; +inf when
    k < 0 (too few reference pairs to flag anything at that level)."""
    scores = np.sort(np.asarray(reference_scores, dtype=np.float64))[::-1]
    if not len(scores):
        raise ValueError("calibration needs at least one reference score")
    if not 0.0 <= flag_share < 1.0:
        raise ValueError(f"flag_share must be in [0, 1), got {flag_share}")
    k = int(np.floor(flag_share * (len(scores) + 1))) - 1
    return float(scores[k]) if k >= 0 else float("inf")


def calibrated_flags(evidence: Evidence, flag_share: float, weights: Mapping[str, float] | None = None
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """(combined score (N,), is_misaligned (N,) bool, thresholds) of the audited pairs, calibrated so that
    at most flag_share of the clean reference pairs would be flagged: thresholds["combined"] on the combined
    score at level flag_share, or, with GROUP_EVIDENCE among the evidence, at flag_share / 2 together with
    thresholds["group"] on its robust z (``group_score``) at flag_share / 2, a pair flagged by either."""
    score, reference = combined_score(evidence, weights)
    if GROUP_EVIDENCE not in evidence:
        threshold = calibrated_threshold(reference, flag_share)
        return score, score > threshold, {"combined": threshold}
    thresholds = {"combined": calibrated_threshold(reference, flag_share / 2)}
    group, group_reference = group_score(evidence)
    thresholds["group"] = calibrated_threshold(group_reference, flag_share / 2)
    return score, (score > thresholds["combined"]) | (group > thresholds["group"]), thresholds


def group_score(evidence: Evidence) -> tuple[np.ndarray, np.ndarray]:
    """(robust z of the group evidence of the audited pairs (N,), of the reference pairs (M,)): unitless,
    higher = the pair's group departs more from clean pairs with its kind of caption."""
    return reference_z(*evidence[GROUP_EVIDENCE])
