"""Offline comparison of Influence-SSL estimators on the per-draw records of benchmarks/estimator_study.py.

For each setting (encoder x data) the study recorded, for two perturbation seeds, every sample's per-draw score
s_k (N x K) and per-draw objective d_k (N x K, forward only). An estimator maps one seed's records to one
value per sample; its stability is the Spearman between the two seeds' values, over the same samples.

Estimators (K1 = draws with a backward, K2 >= K1 = draws with a forward; the first K1 of the K2 are shared):
  mean        mean_k<K1 s_k                                  (today's estimator at K1 = 64)
  cv          mean_k<K1 s_k - beta (mean_k<K1 c_k - mean_k<K2 c_k), c_k = d_k^2, beta pooled over samples
              (control variate: the forward-only draws correct the mean for the draws' luck)
  ratio       mean_k<K1 s_k x mean_k<K2 c_k / mean_k<K1 c_k  (ratio estimator, same control)
  ratio_power ratio estimator with the control d_k^b, b the logreg slope below (session 24):
              mean_k<K1 s_k x mean_k<K2 d_k^b / mean_k<K1 d_k^b; consistent for E[s] for any fixed b
  logreg      log-linear control: log s_k = a(x) + b log d_k + e, b pooled over samples; the estimate is
              a(x) + log mean_k<K2 d_k^b, the log of E[s] up to a constant common to all samples when e is
              homoscedastic (so it ranks like E[s]); a(x) from the K1 draws, the d_k from K2
Also per K: the split-half prediction of the between-seed stability from ONE seed (Spearman between the means
of its even and odd draws, Spearman-Brown corrected), which an adaptive choice of K could use.
Cost per sample in units of one draw with a backward: K1 + FORWARD_SHARE x (K2 - K1).

Usage: python benchmarks/estimator_analysis.py benchmarks/results/estimator_study.npz [--forward-share 0.11]
       [--out benchmarks/results/estimator_analysis.json]
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr


def control(objective: np.ndarray) -> np.ndarray:
    """The control statistic of each draw: the squared objective (the score is quadratic in the response)."""
    return objective ** 2


def pooled_beta(scores: np.ndarray, ctrl: np.ndarray) -> float:
    """Regression slope of s_k on c_k after removing each sample's means (pooled over samples and draws)."""
    s = scores - scores.mean(axis=1, keepdims=True)
    c = ctrl - ctrl.mean(axis=1, keepdims=True)
    return float((s * c).sum() / max((c * c).sum(), 1e-300))


def log_slope(scores: np.ndarray, objective: np.ndarray) -> float:
    """Slope b of log s_k on log d_k after removing each sample's means (pooled over samples and draws)."""
    log_s, log_d = np.log(scores), np.log(objective)
    centred_s, centred_d = log_s - log_s.mean(1, keepdims=True), log_d - log_d.mean(1, keepdims=True)
    return float((centred_s * centred_d).sum() / max((centred_d ** 2).sum(), 1e-300))


def estimate(kind: str, scores: np.ndarray, objective: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """One value per sample from one seed's records (N x K each)."""
    s, c = scores[:, :k1], control(objective)
    if kind == "mean":
        return s.mean(axis=1)
    c_few, c_many = c[:, :k1].mean(axis=1), c[:, :k2].mean(axis=1)
    if kind == "cv":
        return s.mean(axis=1) - pooled_beta(s, c[:, :k1]) * (c_few - c_many)
    if kind == "ratio":
        return s.mean(axis=1) * c_many / np.maximum(c_few, 1e-300)
    if kind in ("logreg", "ratio_power"):
        b = log_slope(s, objective[:, :k1])
        if kind == "ratio_power":
            powered = objective[:, :k2] ** b
            return s.mean(axis=1) * powered.mean(axis=1) / powered[:, :k1].mean(axis=1)
        return (np.log(s) - b * np.log(objective[:, :k1])).mean(axis=1) + np.log((objective[:, :k2] ** b).mean(axis=1))
    raise ValueError(kind)



def analyse(path: str, forward_share: float) -> dict:
    data = np.load(path)
    settings = sorted({key.split("/")[0] for key in data.files})
    out: dict = {"forward_share": forward_share, "settings": {}}
    for setting in settings:
        recs = {seed: (data[f"{setting}/seed{seed}/scores"], data[f"{setting}/seed{seed}/objective"]) for seed in (0, 1)}
        k_max = recs[0][0].shape[1]
        s0, d0 = recs[0]
        within = defaultdict(list)
        for i in range(min(len(s0), 400)):
            within["spearman_s_vs_c_within_sample"].append(spearmanr(s0[i], control(d0[i])).statistic)
        rows = []
        for kind in ("mean", "cv", "ratio", "ratio_power", "logreg"):
            for k1 in (8, 16, 24, 32, 48, 64):
                for k2 in ((k1,) if kind == "mean" else sorted({2 * k1, 4 * k1, k_max})):
                    if k1 > k_max or k2 > k_max or k2 < k1 or (kind != "mean" and k2 == k1):
                        continue
                    a, b = (estimate(kind, *recs[seed], k1, k2) for seed in (0, 1))
                    rows.append({"estimator": kind, "k1": k1, "k2": k2, "cost": k1 + forward_share * (k2 - k1),
                                 "stability": float(spearmanr(a, b).statistic)})
        predicted = {k: split_half_stability(s0[:, :k]) for k in (8, 16, 24, 32, 48, 64) if k <= k_max}
        out["settings"][setting] = {"n": int(len(s0)), "k_max": int(k_max), "split_half_predicted": predicted,
                                    "median_within_sample_spearman_s_vs_c": float(np.nanmedian(
                                        within["spearman_s_vs_c_within_sample"])),
                                    "rows": rows}
    return out


def split_half_stability(per_draw: np.ndarray) -> float:
    """The draws pilot's rule until session 21: Spearman between the means of the even and the odd draws, stepped
    up to K with Spearman-Brown (``influence.stability`` now simulates pairs of seeds instead)."""
    r = float(spearmanr(per_draw[:, 0::2].mean(axis=1), per_draw[:, 1::2].mean(axis=1)).statistic)
    return 2 * r / (1 + r)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("npz")
    p.add_argument("--forward-share", type=float, default=0.11,
                   help="cost of a forward-only draw per draw with a backward (0.11 measured on the small CNN)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args()
    text = json.dumps(analyse(args.npz, args.forward_share), indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
