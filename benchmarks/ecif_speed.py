"""ECIF speed (issue 5, item 5): scoring every training pair against one forward pass, and against the
explicit per-pair-gradient path, measured side by side in one process.

Data: scikit-learn digits, 1,597 training pairs (20% of captions shuffled) and 200 clean reference pairs;
SmallCNN image encoder (SimCLR, 20 epochs), MiniLM text features; EcifScorer defaults (image head on
frozen features, P = 12,672 parameters, conjugate gradients).

Definitions (wall-clock seconds, median of --repeats runs, torch threads as recorded):
- forward_pass: ONE FORWARD PASS OVER THE DATA = the training objective R(theta) evaluated over all fixed
  batches from the precomputed frozen features (projection head, every batch's similarity matrix S and its
  symmetric InfoNCE loss), without gradient. This is the model ECIF differentiates.
- forward_pass_with_encoders: the same plus the frozen encoders over the raw data: SmallCNN over all images
  and MiniLM over all N captions (no de-duplication), for context.
- ecif_pair_scores: the cheap path proper: one JVP per batch and the closed forms, every pair's
  positive_if and negative_if (given s).
- ecif_total: reference gradient + one CG solve s = H^-1 grad L' + ecif_pair_scores.
- explicit_gradients_dot: per-pair gradients grad Pos_n, grad Neg_n (reverse mode, one Jacobian per batch)
  dotted with the same s: the explicit path at its cheapest (it shares the cheap path's single solve).
- explicit_per_pair_solves: the explicit path as the reference computes it, H^-1 applied to each pair's
  gradient (2 CG solves per pair); timed on --solve-sample pairs and extrapolated to N (marked as such).
Targets: ecif_pair_scores <= 3 x forward_pass. Run: python benchmarks/ecif_speed.py. Writes
benchmarks/results/ecif_speed.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from influencegate.data import load_images
from influencegate.data.captions import caption_digits, shuffle_captions
from influencegate.ecif import EcifConfig, EcifScorer, PairSet, loss_gradient, pair_gradients, pair_influence
from influencegate.models import build_encoder
from influencegate.models import pretrain
from influencegate.models.text import load_minilm

RESULTS = Path(__file__).parent / "results"
N_REFERENCE = 200


def median_seconds(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """(median wall-clock seconds over repeats calls, the last call's result)."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--solve-sample", type=int, default=4, help="pairs whose explicit H^-1 solves are timed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    digits = load_images("digits")
    labels = digits.records["label"].to_numpy()
    order = np.random.default_rng(args.seed).permutation(len(labels))
    train, reference = order[N_REFERENCE:], order[:N_REFERENCE]
    captions, _, _ = shuffle_captions(caption_digits(labels[train], args.seed), labels[train], 0.2, args.seed + 1)
    ids = np.array(digits.sample_ids)
    pairs = PairSet(list(ids[train]), captions, digits.images[train])
    ref = PairSet(list(ids[reference]), caption_digits(labels[reference], args.seed + 2), digits.images[reference])
    encoder = pretrain(build_encoder("small_cnn", seed=args.seed, in_channels=1), digits.subset(list(ids[train])), method="simclr", epochs=20,
                       seed=args.seed, progress=False).encoder
    scorer = EcifScorer(EcifConfig(progress=False), image_encoder=encoder).fit(pairs)
    problem, theta = scorer.problem, scorer.theta
    loss = scorer.reference_loss(ref)
    r = args.repeats
    t: dict[str, float] = {}

    def forward() -> float:
        with torch.no_grad():
            return float(problem.objective(theta))

    t["forward_pass"], _ = median_seconds(forward, r)
    minilm = load_minilm("cpu")

    def encoders() -> None:
        with torch.no_grad():
            encoder(pairs.images)
            minilm.encode(pairs.captions, batch_size=256, convert_to_tensor=True, show_progress_bar=False)

    t["frozen_encoders"], _ = median_seconds(encoders, r)
    t["forward_pass_with_encoders"] = t["forward_pass"] + t["frozen_encoders"]
    t["ecif_reference_gradient"], ref_grad = median_seconds(lambda: loss_gradient(loss, theta), r)
    t["ecif_solve"], s = median_seconds(lambda: scorer.solver.solve(ref_grad), r)
    t["ecif_pair_scores"], (pos, neg) = median_seconds(lambda: pair_influence(problem, theta, s), r)
    t["ecif_total"] = t["ecif_reference_gradient"] + t["ecif_solve"] + t["ecif_pair_scores"]

    def explicit_dot() -> tuple[torch.Tensor, torch.Tensor]:
        g_pos, g_neg = pair_gradients(problem, theta)
        return g_pos @ s, g_neg @ s

    t["explicit_gradients_dot"], (pos_explicit, neg_explicit) = median_seconds(explicit_dot, r)
    g_pos, g_neg = pair_gradients(problem, theta)
    sample = g_pos[: args.solve_sample], g_neg[: args.solve_sample]
    seconds_sample, _ = median_seconds(lambda: [scorer.solver.solve(g) for g in (*sample[0], *sample[1])], 1)
    n = len(pairs)
    t["explicit_per_pair_solves_extrapolated"] = seconds_sample / args.solve_sample * n + t["explicit_gradients_dot"]
    ratio_scores = t["ecif_pair_scores"] / t["forward_pass"]
    out = {
        "n_pairs": n,
        "n_reference": N_REFERENCE,
        "trainable_parameters": problem.n_params,
        "batch_size": problem.batches.batch_size,
        "solver": scorer.solver.method,
        "cg_iterations": getattr(scorer.solver, "iterations", None),
        "torch_threads": torch.get_num_threads(),
        "repeats": r,
        "seconds": t,
        "ratios": {
            "ecif_pair_scores_over_forward_pass": ratio_scores,
            "ecif_total_over_forward_pass": t["ecif_total"] / t["forward_pass"],
            "ecif_total_over_forward_pass_with_encoders": t["ecif_total"] / t["forward_pass_with_encoders"],
            "speedup_vs_explicit_gradients_dot": t["explicit_gradients_dot"] / t["ecif_pair_scores"],
            "speedup_total_vs_explicit_per_pair_solves": t["explicit_per_pair_solves_extrapolated"] / t["ecif_total"],
        },
        "cheap_vs_explicit_max_relative_difference": max(
            float((a - b).abs().max() / b.abs().max()) for a, b in ((pos, pos_explicit), (neg, neg_explicit))),
        "target_ecif_pair_scores<=3x_forward_pass": ratio_scores <= 3.0,
        "notes": "explicit_per_pair_solves is extrapolated from --solve-sample pairs (2 CG solves each); "
                 "all other entries are measured on all pairs.",
    }
    print(json.dumps(out, indent=1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ecif_speed.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
