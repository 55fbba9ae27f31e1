"""Fidelity, seed stability and cost of the default's savings, per encoder (sessions 13 and 14, issue 15 item 2).

Same protocol as benchmarks/fidelity.py (its encoder training, no copy): seeded SimCLR SmallCNN, 30 epochs,
K = 64 common-noise draws, raw r = 32. Variants (VARIANTS) differ in the two savings: how many draws fit the
curvature (fit_draws; "rows" = the auto rule at that many gradient rows per curvature dimension, i.e.
fit_draws = ceil(rows x D / N), D = the largest layer's r_out r_in) and the inverse (inverse_rank; None = exact).
- fidelity: first n digits (encoder trained on them), Spearman of each variant against
  exact_self_influence(block_diagonal=False) on the same K draws and seed;
- stability: all 1,797 digits, Spearman between the perturbation seeds of each pair, and the CPU seconds of
  fit and score (time.process_time, the variants side by side in one process, so their ratio is comparable).
Each part of each encoder is written to benchmarks/results/OUT under the --split key as it finishes.
Session 13's default_recheck.json came from this script's first version (577fc75: the default and the control,
encoders 0 and 1, perturbation seeds 0 and 1).
Session 14 (default_stability.json): --split development --encoder-seeds 0,1 --seed-pairs 0:1,2:3, then
--split held_out --encoder-seeds 2,3 --seed-pairs 4:5,6:7 --parts stability.
Session 15 (default_library.json): the library's own default (`library_default`, now all K draws of 512 spread
samples and inverse_rank 256) beside spread512_rank256 and the control, --split held_out --encoder-seeds 2,3
--seed-pairs 4:5 --parts stability; `max_relative_difference` compares each variant's scores with the others'.
Session 22 (small_data_fit.json, issue 15 item 3): the default fit at N = 600 takes 300 samples (at most half
of a small dataset, down to 16 rows per dimension) where it took 512; `library_default` (the new rule) beside
`spread512_rank256` (the old one), fidelity on the first 600 digits, stability on the first 600 digits
(--stability-n 600; the encoder trained on all 1,797 as before): --split development --encoder-seeds 0,1
--seed-pairs 0:1,2:3, then --split held_out --encoder-seeds 2,3 --seed-pairs 4:5,6:7.
Run: nice -n 10 python benchmarks/default_recheck.py [--variants all] [--out default_stability.json]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.fidelity import RESULTS, train_encoder  # noqa: E402
from influencegate import InfluenceConfig, InfluenceScorer, exact_self_influence  # noqa: E402
from influencegate.data import load_images  # noqa: E402
from influencegate.influence import per_sample_gradients, spearman  # noqa: E402
from influencegate.influence.layers import projected_shape, tracked_layers  # noqa: E402

#: name -> fit_draws (an integer), or fit_rows (the session-13 auto rule: ceil(fit_rows x D / N) draws of every
#: sample), or fit_samples (all K draws of that many samples, spread evenly or the first ones), and
#: inverse_rank (None = exact). All explicit, so that the rows do not depend on the library's default.
VARIANTS: dict[str, dict[str, Any]] = {
    "fewer_draws_rank128": dict(fit_rows=32, inverse_rank=128),  # the session-13 default (19 draws at N = 1,797)
    "all_draws_rank128": dict(fit_draws=64, inverse_rank=128),
    "fewer_draws_exact": dict(fit_rows=32, inverse_rank=None),
    "control": dict(fit_draws=64, inverse_rank=None),  # the old default: all N x K rows fit, exact inverse
    "rows64_rank128": dict(fit_rows=64, inverse_rank=128),
    "fewer_draws_rank256": dict(fit_rows=32, inverse_rank=256),
    # the curvature on all K draws of 512 samples (32 rows per dimension at D = 1,024), spread evenly over the
    # dataset or its first ones (= the draws pilot's samples, whose rows the pilot then reuses)
    "spread512_rank128": dict(fit_samples=512, fit_draws=64, inverse_rank=128),
    "first512_rank128": dict(fit_samples=512, fit_first=True, fit_draws=64, inverse_rank=128),
    "spread512_rank256": dict(fit_samples=512, fit_draws=64, inverse_rank=256),  # measured after the others
    # whatever the library's InfluenceConfig() does (session 15: the rule of spread512_rank256, built in)
    "library_default": dict(),
}
COST_REFERENCE = "control"
BEFORE = {  # with the x_copies bug: fidelity_default_variants_n600.json, stability_default_variants.json
    "fidelity": {"fewer_draws_rank128": 0.9421056725157568, "control": 0.9723037008436133},
    "stability": {"fewer_draws_rank128": 0.9573008777243803, "control": 0.9695182782590964},
}


def variant_config(base: InfluenceConfig, params: dict[str, Any], encoder: torch.nn.Module, n: int) -> InfluenceConfig:
    """`base` with the variant's fit_draws and inverse_rank; fit_rows R resolves to ceil(R D / n) draws (capped
    at K), the auto rule of InfluenceConfig.curvature_draws at R rows per dimension instead of FIT_ROWS_PER_DIM."""
    params = {k: v for k, v in params.items() if k not in ("fit_samples", "fit_first")}
    rows = params.pop("fit_rows", None)
    if rows is not None:
        dimension = max(math.prod(projected_shape(m, base.rank)) for m in tracked_layers(encoder).values())
        params["fit_draws"] = min(base.draws, math.ceil(rows * dimension / n))
    return replace(base, **params)


def fit_samples(data, params: dict[str, Any]):
    """The samples the variant fits on: all of `data`, or its fit_samples first ones (fit_first) or that many
    spread evenly over it (every (N - 1) / (fit_samples - 1)-th, rounded)."""
    count = params.get("fit_samples")
    if count is None or count >= len(data):
        return data
    ids = data.sample_ids
    if params.get("fit_first"):
        return data.subset(ids[:count])
    return data.subset([ids[int(i)] for i in np.linspace(0, len(ids) - 1, count).round()])


def fitted_scores(encoder: torch.nn.Module, data, cfg: InfluenceConfig, fit_data=None) -> dict[str, Any]:
    """Fit on `fit_data` (default: `data`) + score all of `data` with `cfg`: scores (N, float64), CPU seconds of
    fit and of score, the draws the curvature was fitted on and the scores average (the pilot may choose
    fewer than K), and the share of the fitted samples that fitted the curvature."""
    start = time.process_time()
    scorer = InfluenceScorer(encoder, cfg).fit(data if fit_data is None else fit_data)
    fitted = time.process_time()
    scores = scorer.score(data)["influence"].to_numpy(dtype=np.float64)
    return dict(scores=scores, fit_cpu_s=fitted - start, score_cpu_s=time.process_time() - fitted,
                fit_draws=scorer.fit_draws, score_draws=scorer.score_draws, fit_share=scorer.fit_share)


def fidelity(n: int, epochs: int, encoder_seed: int, variants: list[str]) -> dict:
    """Spearman of each variant against the exact full-Fisher self-influence on the first n digits."""
    data = load_images("digits")
    data = data.subset(data.sample_ids[:n])
    base = InfluenceConfig(progress=False)
    encoder = train_encoder(data, seed=encoder_seed, epochs=epochs)
    grads = per_sample_gradients(encoder, data, replace(base, batch_size=128))  # as fidelity.py
    exact = exact_self_influence(encoder, data, base, block_diagonal=False, gradients=grads)["influence"]
    rows = {}
    for name in variants:
        cfg = variant_config(base, VARIANTS[name], encoder, len(data))
        run = fitted_scores(encoder, data, cfg, fit_samples(data, VARIANTS[name]))
        rows[name] = dict(VARIANTS[name], fit_draws=run["fit_draws"], score_draws=run["score_draws"],
                          spearman=spearman(run["scores"], exact))
        if name in BEFORE["fidelity"]:
            rows[name]["before"] = BEFORE["fidelity"][name]
        print("fidelity", encoder_seed, name, rows[name], flush=True)
    return dict(n=len(data), encoder_seed=encoder_seed, draws=base.draws, rows=rows)


def stability(epochs: int, encoder_seed: int, pairs: list[tuple[int, int]], variants: list[str],
              n: int | None = None) -> dict:
    """Per variant, on the first n digits (None: all; the encoder is trained on all) and one encoder: Spearman
    between the perturbation seeds of each pair, and the fit and score CPU seconds per image (mean over the
    seeds), their ratio to COST_REFERENCE's and the Spearman to COST_REFERENCE's scores of the same seed (which
    has all N x K gradient rows in its curvature)."""
    data = load_images("digits")
    base = InfluenceConfig(progress=False)
    encoder = train_encoder(data, seed=encoder_seed, epochs=epochs)
    data = data if n is None else data.subset(data.sample_ids[:n])
    runs: dict[str, dict[int, dict]] = {name: {} for name in variants}
    for seed in sorted({s for pair in pairs for s in pair}):
        for name in variants:  # side by side: every variant of a seed before the next seed
            cfg = variant_config(replace(base, seed=seed), VARIANTS[name], encoder, len(data))
            runs[name][seed] = fitted_scores(encoder, data, cfg, fit_samples(data, VARIANTS[name]))
            print("stability", encoder_seed, seed, name, {k: v for k, v in runs[name][seed].items() if k != "scores"},
                  flush=True)
    rows = {name: stability_row(name, by_seed, pairs, len(data)) for name, by_seed in runs.items()}
    for name, row in rows.items():  # the largest |a / b - 1| over the samples and seeds, per other variant
        row["max_relative_difference"] = {
            other: max(float(np.max(np.abs(run["scores"] / runs[other][seed]["scores"] - 1)))
                       for seed, run in runs[name].items()) for other in runs if other != name}
    if COST_REFERENCE in rows:
        reference = runs[COST_REFERENCE]
        for name, row in rows.items():
            row["cost_ratio"] = row["cpu_s_per_image"] / rows[COST_REFERENCE]["cpu_s_per_image"]
            row["spearman_to_reference"] = {seed: spearman(run["scores"], reference[seed]["scores"])
                                            for seed, run in runs[name].items()}
    return dict(n=len(data), encoder_seed=encoder_seed, perturbation_pairs=pairs, draws=base.draws, rows=rows)


def stability_row(name: str, by_seed: dict[int, dict], pairs: list[tuple[int, int]], n: int) -> dict:
    """One variant's between-seed Spearman per pair ("a:b"), its minimum, and its CPU seconds."""
    by_pair = {f"{a}:{b}": spearman(by_seed[a]["scores"], by_seed[b]["scores"]) for a, b in pairs}
    fit, score = ([run[key] for run in by_seed.values()] for key in ("fit_cpu_s", "score_cpu_s"))
    row = dict(VARIANTS[name], fit_draws=sorted({run["fit_draws"] for run in by_seed.values()}),
               score_draws=sorted({run["score_draws"] for run in by_seed.values()}),
               spearman_between_seeds=by_pair, min_spearman=min(by_pair.values()),
               fit_cpu_s=fit, score_cpu_s=score, cpu_s_per_image=(sum(fit) + sum(score)) / len(by_seed) / n)
    if name in BEFORE["stability"] and pairs == [(0, 1)]:
        row["before"] = BEFORE["stability"][name]
    return row


def parse_pairs(text: str) -> list[tuple[int, int]]:
    """'0:1,2:3' -> [(0, 1), (2, 3)]; a clear error for anything else."""
    pairs = []
    for item in text.split(","):
        parts = item.split(":")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or parts[0] == parts[1]:
            raise ValueError(f"--seed-pairs wants distinct integer pairs like 0:1,2:3, got {item!r}")
        pairs.append((int(parts[0]), int(parts[1])))
    return pairs


def parse_variants(text: str) -> list[str]:
    """'all' or a comma list of VARIANTS names; unknown names are an error naming them."""
    names = list(VARIANTS) if text == "all" else text.split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {sorted(VARIANTS)}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--n", type=int, default=600, help="digits for the fidelity part")
    parser.add_argument("--stability-n", type=int, default=None,
                        help="score the first n digits in the stability part (default: all 1,797)")
    parser.add_argument("--encoder-seeds", default="0", help="comma list of encoder training seeds")
    parser.add_argument("--seed-pairs", default="0:1", help="perturbation seed pairs, e.g. 0:1,2:3")
    parser.add_argument("--variants", default="fewer_draws_rank128,control",
                        help=f"'all' or a comma list of {list(VARIANTS)}")
    parser.add_argument("--parts", default="fidelity,stability", help="comma list of fidelity,stability")
    parser.add_argument("--split", default="development", help="key the results are stored under in OUT")
    parser.add_argument("--out", default="default_stability.json", help="file name under benchmarks/results/")
    args = parser.parse_args()
    torch.set_num_threads(1)
    variants, pairs = parse_variants(args.variants), parse_pairs(args.seed_pairs)
    unknown = sorted(set(args.parts.split(",")) - {"fidelity", "stability"})
    if unknown:
        raise ValueError(f"unknown part(s) {unknown}; known: fidelity, stability")
    path = RESULTS / args.out
    out: dict = json.loads(path.read_text()) if path.exists() else {}
    split = out.setdefault(args.split, {})
    split["setup"] = dict(epochs=args.epochs, torch_threads=1, cost_reference=COST_REFERENCE)  # each part keeps the rest
    parts = {"fidelity": lambda seed: fidelity(args.n, args.epochs, seed, variants),
             "stability": lambda seed: stability(args.epochs, seed, pairs, variants, args.stability_n)}
    for seed in [int(s) for s in args.encoder_seeds.split(",")]:
        for part in args.parts.split(","):
            split.setdefault(f"encoder_seed_{seed}", {})[part] = parts[part](seed)
            path.write_text(json.dumps(out, indent=2))
    print(json.dumps(split, indent=2))


if __name__ == "__main__":
    main()
