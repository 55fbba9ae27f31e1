"""Layer weights of the projected score (session 24, issue 15 item 2's fidelity): does weighting each projected
layer by its gradient size over its projected size bring the score closer to the exact one?

The projected score sums the layers' whitened scores g~^T (H~ + lambda)^-1 g~. Each averages to its layer's
effective dimension: under m = r_out r_in when projected, up to d = d_out d_in unprojected, so a layer that the
projection shrinks most counts less than in the exact score. The candidate weights each layer by
min(d, R) / min(m, R) (R: the fitted gradient rows); the rule it had to pass, written before the held-out runs:
benchmarks/rules/layer_weights.md.

Per set (encoder x data): exact_self_influence's per-layer block scores and its full-Fisher score on all K = 64
draws; the scorer's per-layer scores of every draw (default configuration, draws pilot off, perturbation seeds 0
and 1, each its own fit); then, for the plain sum, d/m weights and sqrt(d/m) weights: Spearman of each seed's
score against the exact full-Fisher and block-diagonal scores, and between the seeds at K = 16, 24, 32, 64.
Sets: "tuning" (SimCLR SmallCNN seed 21 on 600 photo patches of seed 41: the diagnosis) and the held-out sets of
the rule (SimCLR 23 and BYOL 24 on 600 patches of seed 43; the digits protocol's held-out encoders 2 and 3 on the
first 600 digits).
Run: python benchmarks/layer_weights.py [--sets tuning,simclr23,byol24,digits2,digits3]
(JSON: benchmarks/results/layer_weights.json; about 4-5 minutes a set on 2 threads)
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import measure_sets  # noqa: E402
from benchmarks.estimator_study import natural_patches  # noqa: E402
from benchmarks.fidelity import train_encoder  # noqa: E402
from benchmarks.small_data_patches import patch_encoder  # noqa: E402
from influencegate import InfluenceConfig, InfluenceScorer  # noqa: E402
from influencegate.data import load_images  # noqa: E402
from influencegate.influence import per_sample_gradients, spearman  # noqa: E402
from influencegate.influence.exact import HEURISTIC_DAMPING, damped_quadratic_scores  # noqa: E402
from influencegate.influence.layers import layer_sizes  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "layer_weights.json"
#: name: (encoder kind, encoder seed, data seed); digits use the first N digits and the fidelity protocol's encoder
SETS = {"tuning": ("simclr", 21, 41), "simclr23": ("simclr", 23, 43), "byol24": ("byol", 24, 43),
        "digits2": ("digits", 2, 0), "digits3": ("digits", 3, 0)}
HELD_OUT = ("simclr23", "byol24", "digits2", "digits3")
N, DRAWS, STABILITY_K = 600, 64, (16, 24, 32, 64)


def set_data(kind: str, encoder_seed: int, data_seed: int):
    """(dataset, encoder) of one set."""
    if kind == "digits":
        data = load_images("digits")
        data = data.subset(data.sample_ids[:N])
        return data, train_encoder(data, seed=encoder_seed, epochs=30).eval()
    return natural_patches(N, seed=data_seed), patch_encoder(kind, encoder_seed)


def exact_scores(encoder, data, base: InfluenceConfig) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({layer: exact block score N}, exact full-Fisher score N), per-layer heuristic damping as the scorer's."""
    ex = per_sample_gradients(encoder, data, replace(base, batch_size=128))
    n, k, p = ex.g.shape
    flat = ex.g.reshape(n * k, p)
    damping = torch.empty(p, dtype=torch.float64)
    blocks = {}
    for name, block in ex.blocks.items():
        rows = flat[:, block]
        damping[block] = HEURISTIC_DAMPING * rows.pow(2).sum().item() / (n * k) / (block.stop - block.start)
        blocks[name] = damped_quadratic_scores(rows, damping[block]).reshape(n, k).mean(1).numpy()
    return blocks, damped_quadratic_scores(flat, damping).reshape(n, k).mean(1).numpy()


def projected_layer_scores(encoder, data, cfg: InfluenceConfig) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """({layer: N x K per-draw whitened score}, {layer: d/m weight min(d, R) / min(m, R)}) of one fitted scorer."""
    scorer = InfluenceScorer(encoder, cfg).fit(data)
    row = {sid: i for i, sid in enumerate(data.sample_ids)}
    per = {name: np.zeros((len(data), scorer.score_draws)) for name in scorer.curvature}
    _, batches = scorer._pass(data, scorer.projectors, "score", draws=scorer.score_draws)
    for ids, ks, grads in batches:
        rows = [row[s] for s in ids]
        for name, curv in scorer.curvature.items():
            values = curv.score(scorer._layer_grad(grads, name, len(ks) * len(ids))).cpu().reshape(len(ks), len(ids))
            for j, k in enumerate(ks):
                per[name][rows, k] = values[j].numpy()
    weights = {}
    for name, curv in scorer.curvature.items():
        d, m = math.prod(layer_sizes(scorer.projectors[name].module)), math.prod(curv.shape)
        weights[name] = min(d, curv.count) / min(m, curv.count)
    return per, weights


def measure(name: str) -> dict:
    kind, encoder_seed, data_seed = SETS[name]
    start = time.perf_counter()
    data, encoder = set_data(kind, encoder_seed, data_seed)
    base = InfluenceConfig(progress=False, target_stability=None, draws=DRAWS)
    blocks, full = exact_scores(encoder, data, base)
    block_total = sum(blocks.values())
    runs = {seed: projected_layer_scores(encoder, data, replace(base, seed=seed)) for seed in (0, 1)}
    dm = runs[0][1]
    out: dict = dict(kind=kind, encoder_seed=encoder_seed, data_seed=data_seed, n=len(data),
                     exact_block_vs_full=spearman(block_total, full), weights_dm=dm, layers={}, weightings={})
    for layer, exact in blocks.items():
        out["layers"][layer] = dict(mean_exact=float(exact.mean()), mean_projected=float(runs[0][0][layer].mean()),
                                    spearman_to_exact_block=spearman(runs[0][0][layer].mean(1), exact))
    weightings = (("plain", {k: 1.0 for k in dm}), ("dm", dm), ("sqrt_dm", {k: v ** 0.5 for k, v in dm.items()}))
    for weighting, w in weightings:
        totals = {seed: sum(w[k] * runs[seed][0][k] for k in dm) for seed in (0, 1)}  # N x K
        out["weightings"][weighting] = dict(
            fidelity_full=[spearman(totals[s].mean(1), full) for s in (0, 1)],
            fidelity_block=[spearman(totals[s].mean(1), block_total) for s in (0, 1)],
            stability={k: spearman(totals[0][:, :k].mean(1), totals[1][:, :k].mean(1)) for k in STABILITY_K})
    out["seconds"] = time.perf_counter() - start
    print(name, json.dumps({k: v for k, v in out["weightings"].items()}), flush=True)
    return out


def verdict(sets: dict) -> dict:
    """The rule of benchmarks/rules/layer_weights.md over the held-out sets measured."""
    checks = {}
    for name in HELD_OUT:
        if name not in sets:
            continue
        plain, dm = sets[name]["weightings"]["plain"], sets[name]["weightings"]["dm"]
        gain = float(np.mean(dm["fidelity_full"]) - np.mean(plain["fidelity_full"]))
        needed = 0.03 if name == "simclr23" else -0.01
        stable = all(dm["stability"][k] >= plain["stability"][k] - 0.01 for k in (24, 32))
        checks[name] = dict(fidelity_gain=gain, needed=needed, passes=gain >= needed and stable)
    return dict(checks=checks, adopt=len(checks) == len(HELD_OUT) and all(c["passes"] for c in checks.values()))


def main() -> None:
    sets = measure_sets(__doc__, list(SETS), measure)
    out = dict(draws=DRAWS, n=N, rule="benchmarks/rules/layer_weights.md", sets=sets, verdict=verdict(sets))
    RESULTS.write_text(json.dumps(out, indent=1, default=float) + "\n")
    print(json.dumps(out["verdict"], indent=1))


if __name__ == "__main__":
    main()
