"""Re-measure the default's fidelity and stability after the capture.x_copies fix (cf78731), session 13.

Same protocol as benchmarks/fidelity.py (its functions, no copy): seeded SimCLR SmallCNN, 30 epochs.
- fidelity: first 600 digits, Spearman of the default (fit_draws auto = 55, inverse_rank 128) and of the
  control (fit_draws 64, exact inverse; no short pass, so unaffected by the bug) against
  exact_self_influence(block_diagonal=False), same K = 64 draws and seed;
- stability: all 1,797 digits, Spearman between perturbation seeds 0 and 1 for the same two variants.
Writes benchmarks/results/default_recheck.json after each part (a partial run keeps what finished).
Run: nice -n 10 python benchmarks/default_recheck.py [--out default_recheck.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.fidelity import RESULTS, timed_scores, train_encoder  # noqa: E402
from influencegate import InfluenceConfig, exact_self_influence  # noqa: E402
from influencegate.data import load_images  # noqa: E402
from influencegate.influence import per_sample_gradients, spearman  # noqa: E402

VARIANTS = {"default": dict(fit_draws=None, inverse_rank=128), "control": dict(fit_draws=64, inverse_rank=None)}
BEFORE = {  # with the bug: fidelity_default_variants_n600.json, stability_default_variants.json
    "fidelity": {"default": 0.9421056725157568, "control": 0.9723037008436133},
    "stability": {"default": 0.9573008777243803, "control": 0.9695182782590964},
}


def fidelity(n: int, epochs: int, encoder_seed: int) -> dict:
    """Spearman of each variant against the exact full-Fisher self-influence on the first n digits."""
    data = load_images("digits")
    data = data.subset(data.sample_ids[:n])
    base = InfluenceConfig(progress=False)
    encoder = train_encoder(data, seed=encoder_seed, epochs=epochs)
    grads = per_sample_gradients(encoder, data, replace(base, batch_size=128))  # as fidelity.py
    exact = exact_self_influence(encoder, data, base, block_diagonal=False, gradients=grads)["influence"]
    rows = {}
    for name, params in VARIANTS.items():
        scores, _ = timed_scores(encoder, data, replace(base, **params))
        rows[name] = dict(params, spearman=spearman(scores, exact), before=BEFORE["fidelity"][name])
        print(name, rows[name], flush=True)
    return dict(n=len(data), encoder_seed=encoder_seed, draws=base.draws, rows=rows)


def stability(epochs: int, encoder_seed: int) -> dict:
    """Spearman between perturbation seeds 0 and 1 for each variant on all digits, one encoder."""
    data = load_images("digits")
    base = InfluenceConfig(progress=False)
    encoder = train_encoder(data, seed=encoder_seed, epochs=epochs)
    rows = {}
    for name, params in VARIANTS.items():
        cfg = replace(base, **params)
        a, _ = timed_scores(encoder, data, cfg)
        b, _ = timed_scores(encoder, data, replace(cfg, seed=1))
        rows[name] = dict(params, spearman_between_seeds=spearman(a, b), before=BEFORE["stability"][name])
        print(name, rows[name], flush=True)
    return dict(n=len(data), encoder_seed=encoder_seed, perturbation_seeds=[0, 1], draws=base.draws, rows=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--n", type=int, default=600, help="digits for the fidelity part")
    parser.add_argument("--encoder-seed", type=int, default=0)
    parser.add_argument("--out", default="default_recheck.json", help="file name under benchmarks/results/")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out: dict = {"note": "re-measured after the capture.x_copies fix (cf78731), session 13; 'before' = the "
                 "figures measured with the bug (the encoder's initial weights were not seeded then, so "
                 "before/after also differ by the encoder: the control row, unaffected by the bug, shows how much)",
                 "torch_threads": 1}
    parts = {"fidelity": lambda: fidelity(args.n, args.epochs, args.encoder_seed),
             "stability": lambda: stability(args.epochs, args.encoder_seed)}
    for part, run in parts.items():
        out[part] = run()
        (RESULTS / args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
