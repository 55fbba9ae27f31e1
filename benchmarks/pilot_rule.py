"""Why the draws pilot's split-half rule was optimistic, and what the simulated seed pairs give (issue 15 item 2,
session 21).

On the two tuning patch encoders of benchmarks/fit_rule_scale.py (SimCLR seed 9, BYOL seed 8; 10,000 patches of
seed 7), the default fit with perturbation seeds 0 and 1, and the pilot's per-draw scores (512 spread patches x
64 draws) of each. Per candidate K, from one seed's pilot:
- split_half: the rule until session 21 (even against odd draws of the first K, Spearman-Brown);
- random_splits: mean and sd of that prediction over 100 random half-splits of the first K draws;
- bootstrap_sd: sd of the even/odd prediction over 200 resamples of the 512 patches;
- simulated: mean, sd and 10th percentile of ``influence.stability.simulated_stability`` (the rule since);
and between the two seeds' pilots (the same 512 patches): the Spearman of their K-draw means. Last, the
curvature's own seed noise: the pilot patches' 64-draw means of seed a's draws under seed a's and under seed b's
curvature. The measured stability over all 10,000 patches is in fit_rule_scale.json / fit_rule_scale_simclr.json.

Output: benchmarks/results/pilot_rule.json. Run: nice -n 10 python benchmarks/pilot_rule.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.estimator_analysis import split_half_stability  # noqa: E402
from benchmarks.estimator_study import natural_patches  # noqa: E402
from influencegate import InfluenceConfig, InfluenceScorer  # noqa: E402
from influencegate.influence import spearman  # noqa: E402
from influencegate.influence.stability import PAIR_QUANTILE, simulated_stability  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ENCODERS = (("simclr", 9), ("byol", 8))
CANDIDATES = (16, 20, 24, 28, 32, 40, 48, 64)


def pilot_rows(scorer: InfluenceScorer, ids: list[str]) -> np.ndarray:
    """The pilot's per-draw scores, 512 x K, rows in `ids` order."""
    return np.stack([scorer._pilot[sid] for sid in ids])


def predictions(per_draw: np.ndarray, rng: np.random.Generator) -> dict[str, dict]:
    """Per candidate K: the split-half rule, its spread over random splits and over resampled patches, and the
    simulated seed pairs."""
    out = {}
    for k in CANDIDATES:
        splits = []
        for _ in range(100):
            order = rng.permutation(k)
            r = spearman(per_draw[:, order[: k // 2]].mean(axis=1), per_draw[:, order[k // 2:]].mean(axis=1))
            splits.append(2 * r / (1 + r))
        boot = [split_half_stability(per_draw[rng.integers(0, len(per_draw), len(per_draw)), :k]) for _ in range(200)]
        simulated = simulated_stability(per_draw, k)
        out[str(k)] = dict(split_half=split_half_stability(per_draw[:, :k]), random_splits_mean=float(np.mean(splits)),
                           random_splits_sd=float(np.std(splits)), bootstrap_sd=float(np.std(boot)),
                           simulated_mean=float(simulated.mean()), simulated_sd=float(simulated.std()),
                           simulated_q10=float(np.quantile(simulated, PAIR_QUANTILE)))
    return out


def curvature_swap(encoder: torch.nn.Module, pilot, scorers: list[InfluenceScorer]) -> dict[str, float]:
    """Spearman of the pilot patches' 64-draw means of seed a's draws under seed a's and seed b's curvature."""
    ids = pilot.sample_ids
    out = {}
    for a, b in ((0, 1), (1, 0)):
        swapped = InfluenceScorer(encoder, InfluenceConfig(progress=False, seed=a, target_stability=None)).fit(pilot)
        swapped.curvature = scorers[b].curvature
        rows: dict[str, np.ndarray] = {}
        for batch_ids, k, values in swapped._draw_scores(pilot, 64, "swapped curvature"):
            for sid, value in zip(batch_ids, values):
                rows.setdefault(sid, np.zeros(64))[k] = value
        out[f"draws_{a}_curvature_{a}_vs_{b}"] = spearman(pilot_rows(scorers[a], ids).mean(axis=1),
                                                          np.stack([rows[sid] for sid in ids]).mean(axis=1))
    return out


def main() -> None:
    from influencegate.models import build_encoder, pretrain

    torch.set_num_threads(1)
    data = natural_patches(10_000, seed=7)
    out: dict = dict(n=len(data), patches_seed=7, encoders={})
    for method, seed in ENCODERS:
        encoder = pretrain(build_encoder("small_cnn", seed=seed, in_channels=3), natural_patches(2000, seed=seed),
                           method=method, epochs=10, seed=seed, progress=False).encoder.eval()
        scorers = [InfluenceScorer(encoder, InfluenceConfig(progress=False, seed=s)).fit(data) for s in (0, 1)]
        ids = list(scorers[0]._pilot)
        rows = [pilot_rows(s, ids) for s in scorers]
        rng = np.random.default_rng(0)
        row = dict(score_draws=[s.score_draws for s in scorers],
                   per_seed=[predictions(r, rng) for r in rows],
                   pilot_between_seeds={str(k): spearman(rows[0][:, :k].mean(axis=1), rows[1][:, :k].mean(axis=1))
                                        for k in CANDIDATES},
                   curvature_swap=curvature_swap(encoder, data.subset(ids), scorers))
        out["encoders"][f"{method}_{seed}"] = row
        print(method, seed, json.dumps(row)[:600], flush=True)
        (RESULTS / "pilot_rule.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
