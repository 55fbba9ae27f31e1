"""How many draws a ranking needs: the split-half prediction of its stability between perturbation seeds.

A score is a mean over K draws. Two runs with different perturbation seeds rank the samples alike to a
degree that grows with K and depends on the data: on 8 x 8 digits (64 pixels) a SmallCNN needs K = 64 for
Spearman 0.95 between seeds, while on 32 x 32 photo patches K = 16 gives 0.977 (benchmarks/estimator_study.py).
From the per-draw scores of ONE run, the Spearman between the means of the even and the odd draws,
corrected with Spearman-Brown (r_K = 2 r / (1 + r)), predicts the between-seed stability at K; measured
against two real seeds it was within 0.03 (conservative on the digits, up to 0.027 optimistic at K = 8 on
patches, <= 0.006 from K = 16; benchmarks/results/estimator_analysis.json).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

#: Candidate draw counts, smallest first (the configured maximum K is always a candidate).
DRAW_GRID = (16, 24, 32, 48, 64, 96, 128)
#: Samples of the pilot that predicts the stability (the first ones of the dataset).
PILOT_SAMPLES = 512


def split_half_stability(per_draw: np.ndarray) -> float:
    """Predicted Spearman between two seeds' means over K draws, from one seed's N x K per-draw scores."""
    if per_draw.shape[1] < 2 or per_draw.shape[0] < 3:
        return float("nan")
    r = float(spearmanr(per_draw[:, 0::2].mean(axis=1), per_draw[:, 1::2].mean(axis=1)).statistic)
    return 2 * r / (1 + r) if np.isfinite(r) and r > -1 else float("nan")


def candidate_draws(maximum: int) -> list[int]:
    """The draw counts worth trying up to `maximum`: DRAW_GRID below it, then `maximum` itself."""
    return [k for k in DRAW_GRID if k < maximum] + [maximum]


def choose_draws(per_draw: np.ndarray, target: float) -> tuple[int, dict[int, float]]:
    """(the smallest candidate K whose predicted stability reaches `target`, else all K; the prediction per
    candidate) from the pilot's N x K_max per-draw scores."""
    predictions: dict[int, float] = {}
    for k in candidate_draws(per_draw.shape[1]):
        predictions[k] = split_half_stability(per_draw[:, :k])
        if predictions[k] >= target:
            return k, predictions
    return per_draw.shape[1], predictions
