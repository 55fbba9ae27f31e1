"""How many draws a ranking needs: the between-seed stability of K-draw scores, simulated from one pilot run.

A score is a mean over K draws. Two runs with different perturbation seeds rank the samples alike to a
degree that grows with K and depends on the data: on 8 x 8 digits (64 pixels) a SmallCNN needs K = 64 for
Spearman 0.95 between seeds, while on 32 x 32 photo patches K = 16 gives 0.977 (benchmarks/estimator_study.py).

The pilot scores its samples with all K_max draws. Two disjoint random sets of K of those draws are two
simulated seeds: the Spearman between their means is one draw of the between-seed stability at K, with no
extrapolation while K <= K_max / 2 (beyond it, disjoint sets of K_max / 2 draws, stepped up to K with
Spearman-Brown). SIMULATED_PAIRS such pairs give the stability's expected value and its spread. The spread
matters: under common noise every sample shares draw k, so which draws a seed gets moves every sample's error
alike, and one pair of seeds lands within about +-0.01 of the expected value (sd; a SimCLR patch encoder at
K = 24, README, issue 15) however many samples there are. K is chosen where PAIR_QUANTILE of the simulated
pairs (9 in 10) reach the target. Beyond K_max / 2 the step-up can be conservative: on 8 x 8 digits, where 64
orthogonal draws are a complete frame of the 64 pixels, the pilot expects 0.918 at K = 64 and two seeds measure
0.961 (benchmarks/results/noise_stability_session21_digits.json).

The earlier rule (even against odd draws of the first K, stepped up to K with Spearman-Brown) predicted 0.960
on that encoder where two seeds measured 0.94996 and the simulated pairs give 0.951 (session 21).
"""
from __future__ import annotations

import numpy as np

from influencegate.influence.ranking import rank_correlation

#: Candidate draw counts, smallest first (the configured maximum K is always a candidate).
DRAW_GRID = (16, 20, 24, 28, 32, 40, 48, 64, 96, 128)
#: Samples of the pilot that predicts the stability (the first ones of the dataset).
PILOT_SAMPLES = 512
#: Simulated pairs of seeds per candidate K.
SIMULATED_PAIRS = 64
#: The chosen K's simulated pairs reach the target at this quantile (0.1: 9 pairs in 10).
PAIR_QUANTILE = 0.1


def simulated_stability(per_draw: np.ndarray, k: int, pairs: int = SIMULATED_PAIRS, seed: int = 0,
                        objective: np.ndarray | None = None, controls: np.ndarray | None = None) -> np.ndarray:
    """(pairs,) Spearman between the K-draw estimates of two simulated seeds, from one run's N x K_max per-draw
    scores: disjoint random sets of m = min(K, K_max // 2) draws, stepped up from m to K draws with
    Spearman-Brown (r_K = f r / (1 + (f - 1) r), f = K / m; f = 1 while K <= K_max / 2). The estimates are the
    sets' means, or with `objective` (N x K_max, the same draws' d_k) and `controls` (N x 2, each simulated seed's
    mean objective over a frame of draws of its own) the ratio estimates mean(s) x control / mean(d)
    (``influence.control``)."""
    n, k_max = per_draw.shape
    m = min(k, k_max // 2)
    if m < 1 or n < 3:
        return np.full(pairs, np.nan)
    rng = np.random.default_rng(seed)
    order = np.stack([rng.permutation(k_max)[: 2 * m] for _ in range(pairs)]).reshape(pairs, 2, m)  # draw indices
    means = per_draw[:, order].mean(axis=3)  # N x pairs x 2: each simulated seed's mean
    if objective is not None and controls is not None:
        means = means * controls[:, None, :] / np.maximum(objective[:, order].mean(axis=3), np.finfo(float).tiny)
    r = rank_correlation(means[:, :, 0], means[:, :, 1])
    f = k / m
    return f * r / (1 + (f - 1) * r)


def candidate_draws(maximum: int) -> list[int]:
    """The draw counts worth trying up to `maximum`: DRAW_GRID below it, then `maximum` itself."""
    return [k for k in DRAW_GRID if k < maximum] + [maximum]


def choose_draws(per_draw: np.ndarray, target: float, objective: np.ndarray | None = None,
                 controls: np.ndarray | None = None) -> tuple[int, dict[int, float], dict[int, float]]:
    """(the smallest candidate K whose simulated pairs reach `target` at PAIR_QUANTILE, else all K; the simulated
    pairs' mean stability per candidate tried; their PAIR_QUANTILE) from the pilot's N x K_max per-draw scores
    (and, for the ratio estimator, their objective and controls: `simulated_stability`)."""
    expected: dict[int, float] = {}
    quantiles: dict[int, float] = {}
    for k in candidate_draws(per_draw.shape[1]):
        values = simulated_stability(per_draw, k, objective=objective, controls=controls)
        expected[k], quantiles[k] = float(np.mean(values)), float(np.quantile(values, PAIR_QUANTILE))
        if quantiles[k] >= target:
            return k, expected, quantiles
    return per_draw.shape[1], expected, quantiles
