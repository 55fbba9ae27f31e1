"""Fidelity and stability of Influence-SSL on a small CNN trained with SimCLR on digits (issue 2, items 3-4).

Prints JSON and writes benchmarks/results/fidelity.json and fidelity.md:
- fidelity: Spearman of each curvature x rank against exact_self_influence(block_diagonal=False), same draws;
- stability: Spearman between two perturbation seeds over K draws, iid vs orthogonal noise, with the cost;
- encoders: Spearman between the scores of two independently trained encoders (default configuration).
Run: python benchmarks/fidelity.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from influencegate import InfluenceConfig, InfluenceScorer, exact_self_influence
from influencegate.data import load_images
from influencegate.influence import per_sample_gradients, spearman
from influencegate.models import build_encoder, pretrain

RESULTS = Path(__file__).parent / "results"


def train_encoder(data, seed: int, epochs: int) -> torch.nn.Module:
    initial = build_encoder("small_cnn", seed=seed, in_channels=1)  # seeded: reruns train the same encoder
    return pretrain(initial, data, method="simclr", epochs=epochs, seed=seed, progress=False).encoder


def timed_scores(encoder, data, cfg: InfluenceConfig) -> tuple[list[float], float]:
    start = time.perf_counter()
    table = InfluenceScorer(encoder, cfg).fit(data).score(data)
    return table["influence"].tolist(), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--n", type=int, default=None, help="use the first n digits (default: all 1797)")
    parser.add_argument("--ranks", default="8,16,32,64")
    parser.add_argument("--draws-grid", default="1,2,4,8,16")
    parser.add_argument("--curvatures", default="identity,diagonal,kfac,ekfac,raw")
    parser.add_argument("--noises", default="iid,orthogonal,common")
    parser.add_argument("--fit-draws", default="auto", help="comma list of fit_draws values ('auto' = None)")
    parser.add_argument("--inverse-ranks", default="128", help="comma list of raw inverse_rank values ('none' = exact)")
    parser.add_argument("--out", default="fidelity.json", help="file name under benchmarks/results/")
    parser.add_argument("--skip", default="", help="comma list of sections to skip: fidelity,stability,encoders")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = load_images("digits")
    if args.n:
        data = data.subset(data.sample_ids[: args.n])
    base = InfluenceConfig(progress=False)
    out: dict = {"n": len(data), "default": base.to_params(), "torch_threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    encoder = train_encoder(data, seed=0, epochs=args.epochs)
    out["pretrain_seconds"] = time.perf_counter() - t0
    skip = set(args.skip.split(","))

    if "fidelity" not in skip:
        t0 = time.perf_counter()
        grads = per_sample_gradients(encoder, data, replace(base, batch_size=128))
        exact = exact_self_influence(encoder, data, base, block_diagonal=False, gradients=grads)["influence"]
        exact_block = exact_self_influence(encoder, data, base, block_diagonal=True, gradients=grads)["influence"]
        out["exact_seconds"] = time.perf_counter() - t0
        out["exact_block_vs_full_spearman"] = spearman(exact_block, exact)
        rows = []
        options = lambda text, none: [None if v == none else int(v) for v in text.split(",")]  # noqa: E731
        for curvature in args.curvatures.split(","):
            for rank in [int(r) for r in args.ranks.split(",")]:
                for fit_draws in options(args.fit_draws, "auto"):
                    for inverse_rank in options(args.inverse_ranks, "none") if curvature == "raw" else [None]:
                        cfg = replace(base, curvature=curvature, rank=rank, fit_draws=fit_draws,
                                      inverse_rank=inverse_rank)
                        scores, seconds = timed_scores(encoder, data, cfg)
                        rows.append(dict(curvature=curvature, rank=rank, fit_draws=fit_draws, inverse_rank=inverse_rank,
                                         spearman=spearman(scores, exact), seconds=seconds))
                        print(json.dumps(rows[-1]), flush=True)
        out["fidelity"] = rows

    if "stability" not in skip:
        rows = []
        for noise in args.noises.split(","):
            for draws in [int(k) for k in args.draws_grid.split(",")]:
                cfg = replace(base, draws=draws, noise=noise)
                a, seconds = timed_scores(encoder, data, cfg)
                b, _ = timed_scores(encoder, data, replace(cfg, seed=1))
                rows.append(dict(noise=noise, draws=draws, spearman_between_seeds=spearman(a, b), seconds=seconds))
                print(json.dumps(rows[-1]), flush=True)
        out["stability"] = rows

    if "encoders" not in skip:
        other = train_encoder(data, seed=1, epochs=args.epochs)
        a, _ = timed_scores(encoder, data, base)
        b, _ = timed_scores(other, data, base)
        out["spearman_between_encoders"] = spearman(a, b)

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
