"""Why the ECIF reference score ranks misaligned pairs worse than the CLIP score on the digits benchmark.

Same split as benchmarks/ecif_quality.py (``make_split``: 1,200 training pairs, 20% of their captions shuffled
to name another digit, 200 clean reference pairs, SimCLR SmallCNN image encoder). The frozen image features
are computed once per seed and given to EcifScorer as M x D float64 features; the MiniLM text features of
the distinct captions are computed once and served by a caching text encoder.

- decomposition (EcifConfig defaults: linear image head on the encoder's 32-dim pooled output, delta 300,
  CG solver): the per-reference influence matrix I[n, r] = grad l_r^T H^-1 grad(Pos_n + Neg_n), l_r = Pos_r
  of reference pair r in its fixed reference batch (the batches of ``ecif.reference.reference_loss``), so
  that sum_r I[n, r] / M = positive_if_n + negative_if_n of ``scorer.score(reference)`` (checked to 1e-6
  relative). The misalignment score -sum_r I[n, r] / M is split by which references it sums over: those of
  the training image's digit (image_digit), of the digit the caption names (caption_digit; for a clean
  pair both are the same set), of either (oracle_relevant), and all others (unrelated; full = oracle_relevant
  + unrelated). AUROC of each against the shuffled pairs, next to the CLIP-score baseline (-clip_score), and
  each part's mean (clean, misaligned) and standard deviation over the clean pairs.
- regimes: features {pooled: the encoder's 32-dim output; conv3: the pre-pool conv3 map flattened, 128-dim}
  x delta {300, 30, 3}: AUROC of the ECIF reference score, the CLIP score, the self-influence score
  (``scorer.score(None)``, low-rank inverse) and a leave-one-out alignment score -cos(u_n, v_n(theta +
  dtheta_n)), dtheta_n = H^-1 grad(Pos_n + Neg_n) through the same rank-300 LowRankSolver: how well pair n
  is aligned by the model trained without it (S is linear in theta, so v_n(theta + d) = v_n(theta) + v_n(d)
  - v_n(0) exactly). Fit gradient norm and seconds per regime.

Run: python benchmarks/ecif_ceiling.py [--seeds 100] [--deltas 300,30,3]. Development seed 100 (9 minutes
on one thread, 5 of them the 200 CG solves). Writes benchmarks/results/ecif_ceiling.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from ecif_quality import FRACTION, N_REFERENCE, N_TRAIN, make_split  # noqa: E402

from influencegate.data import load_images  # noqa: E402
from influencegate.data.captions import caption_digits, shuffle_captions  # noqa: E402
from influencegate.ecif import EcifConfig, EcifScorer, PairSet, pair_gradients  # noqa: E402
from influencegate.ecif.batches import make_batches  # noqa: E402
from influencegate.ecif.contrastive import positive_part  # noqa: E402
from influencegate.ecif.hessian import LowRankSolver  # noqa: E402
from influencegate.ecif.problem import ContrastiveProblem  # noqa: E402
from influencegate.models.text import encode_texts  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TextEncoder = Callable[[Sequence[str]], torch.Tensor]
SELF_CHECK_RTOL = 1e-6


def auroc(bad: np.ndarray, score: np.ndarray) -> float:
    return float(roc_auc_score(bad, score))


def digit_labels(seed: int, split: dict) -> dict[str, np.ndarray]:
    """The digit of each training image, of each training caption and of each reference pair, drawn as
    ``make_split`` draws them (checked against its captions and shuffled pairs)."""
    labels = load_images("digits").records["label"].to_numpy()
    order = np.random.default_rng(seed).permutation(len(labels))
    train, reference = order[:N_TRAIN], order[N_TRAIN:N_TRAIN + N_REFERENCE]
    captions, caption_labels, _ = shuffle_captions(caption_digits(labels[train], seed), labels[train], FRACTION, seed + 1)
    if captions != split["pairs"].captions or not np.array_equal(caption_labels != labels[train], split["bad"]):
        raise RuntimeError("the digit labels do not reproduce make_split's captions")
    return {"image": labels[train], "caption": caption_labels, "reference": labels[reference]}


def caching_text_encoder(captions: Sequence[str]) -> TextEncoder:
    """MiniLM features of the distinct ``captions``, computed once: captions -> N x 384 float32."""
    unique = sorted(set(captions))
    table = dict(zip(unique, encode_texts(unique)))
    return lambda batch: torch.stack([table[c] for c in batch])


def feature_extractors(encoder: nn.Module) -> dict[str, nn.Module]:
    """The default pooled output (32-dim) and the flattened pre-pool conv3 map (32 x 2 x 2 = 128-dim)."""
    return {"pooled": encoder, "conv3": nn.Sequential(*encoder.features[:6], nn.Flatten())}


def as_features(pairs: PairSet, extractor: nn.Module) -> PairSet:
    """The same pairs with their images replaced by frozen features, M x D float64."""
    with torch.no_grad():
        features = extractor.eval()(pairs.images.float()).to(torch.float64)
    return PairSet(pairs.sample_ids, pairs.captions, features)


def fit(pairs: PairSet, config: EcifConfig, text_encoder: TextEncoder) -> tuple[EcifScorer, float]:
    start = time.perf_counter()
    scorer = EcifScorer(config, text_encoder=text_encoder).fit(pairs)
    return scorer, time.perf_counter() - start


def reference_pair_gradients(scorer: EcifScorer, reference: PairSet) -> torch.Tensor:
    """grad l_r for every reference pair r, l_r = Pos_r in its fixed reference batch: M x P float64."""
    cfg, model = scorer.config, scorer.problem.model
    images, texts = scorer.image_inputs(reference.images), scorer.text_inputs(reference.captions)
    out = torch.empty(len(reference), scorer.problem.n_params, dtype=torch.float64)
    for members in make_batches(len(reference), cfg.reference_batch_size or cfg.batch_size, cfg.seed).members:
        def pos(theta: torch.Tensor, members: torch.Tensor = members) -> torch.Tensor:
            return positive_part(model.similarity(theta, images[members], texts[members]))

        out[members] = torch.func.jacrev(pos)(scorer.theta).detach()
    return out


def influence_matrix(scorer: EcifScorer, reference: PairSet) -> tuple[np.ndarray, dict]:
    """I[n, r] = grad l_r^T H^-1 grad(Pos_n + Neg_n), N x M (CG solves, one per reference pair), and timings."""
    start = time.perf_counter()
    solved = scorer.solver.solve(reference_pair_gradients(scorer, reference).T)  # P x M
    solve_seconds = time.perf_counter() - start
    g_pos, g_neg = pair_gradients(scorer.problem, scorer.theta)
    return ((g_pos + g_neg) @ solved).numpy(), {"solve_seconds": solve_seconds,
                                               "cg_iterations": scorer.solver.iterations}


def decomposition(scorer: EcifScorer, reference: PairSet, labels: dict[str, np.ndarray], bad: np.ndarray) -> dict:
    table = scorer.score(reference)
    influence, timing = influence_matrix(scorer, reference)
    m = len(reference)
    summed = influence.sum(1) / m
    expected = (table["positive_if"] + table["negative_if"]).to_numpy()
    error = float(np.linalg.norm(summed - expected) / np.linalg.norm(expected))
    if error > SELF_CHECK_RTOL:
        raise AssertionError(f"sum_r I / M differs from positive_if + negative_if by {error:.2e} (relative)")
    image = labels["reference"][None, :] == labels["image"][:, None]
    caption = labels["reference"][None, :] == labels["caption"][:, None]
    masks = {"image_digit": image, "caption_digit": caption, "oracle_relevant": image | caption,
             "unrelated": ~(image | caption)}
    parts = {"full": -summed, **{k: -(influence * mask).sum(1) / m for k, mask in masks.items()}}
    return {
        **timing,
        "self_check_relative_error": error,
        "references_per_pair": {k: float(mask.sum(1).mean()) for k, mask in masks.items()},
        "auroc": {**{k: auroc(bad, v) for k, v in parts.items()}, "clip_score": auroc(bad, -table["clip_score"].to_numpy())},
        "mean_clean": {k: float(v[~bad].mean()) for k, v in parts.items()},
        "mean_misaligned": {k: float(v[bad].mean()) for k, v in parts.items()},
        "std_clean": {k: float(v[~bad].std()) for k, v in parts.items()},
    }


def loo_alignment(problem: ContrastiveProblem, theta: torch.Tensor, solver: LowRankSolver) -> np.ndarray:
    """-cos(u_n, v_n(theta + dtheta_n)), dtheta_n = H^-1 grad(Pos_n + Neg_n): the misalignment of pair n under
    the model trained without it. The image head is affine in theta: v(theta + d) = v(theta) + v(d) - v(0)."""
    g_pos, g_neg = pair_gradients(problem, theta)
    dtheta = solver.solve((g_pos + g_neg).T).T  # N x P
    model, images = problem.model, problem.images
    shift = torch.func.vmap(lambda d, x: model.embed(d, x[None], None)[0][0])(dtheta, images)
    v = model.embed(theta, images, None)[0] + shift - model.embed(torch.zeros_like(theta), images, None)[0]
    u = model.embed(theta, None, problem.texts)[1]
    return -F.cosine_similarity(u, v, dim=-1).numpy()


def regime(scorer: EcifScorer, fit_seconds: float, reference: PairSet, bad: np.ndarray) -> dict:
    start = time.perf_counter()
    table = scorer.score(reference)
    reference_seconds = time.perf_counter() - start
    start = time.perf_counter()
    self_table = scorer.score(None)
    solver = scorer.self_influence_solver
    if not isinstance(solver, LowRankSolver) or len(solver.eigenvalues) != 300:
        raise RuntimeError("expected the rank-300 low-rank solver (P > exact_max_params)")
    loo = loo_alignment(scorer.problem, scorer.theta, solver)
    return {
        "n_params": scorer.problem.n_params,
        "fit_grad_norm": scorer.fit_result.grad_norm,
        "fit_converged": scorer.fit_result.converged,
        "fit_seconds": fit_seconds,
        "reference_score_seconds": reference_seconds,
        "self_and_loo_seconds": time.perf_counter() - start,
        "auroc_ecif": auroc(bad, table["misalignment_score"].to_numpy()),
        "auroc_clip_score": auroc(bad, -table["clip_score"].to_numpy()),
        "auroc_self_influence": auroc(bad, self_table["misalignment_score"].to_numpy()),
        "auroc_loo_alignment": auroc(bad, loo),
    }


def seed_run(seed: int, pretrain_epochs: int, deltas: Sequence[float]) -> dict:
    start = time.perf_counter()
    split = make_split(seed, pretrain_epochs)
    bad, config = split["bad"], EcifConfig(progress=False)
    text_encoder = caching_text_encoder(split["pairs"].captions + split["reference"].captions)
    out: dict = {"seed": seed, "regimes": {}}
    for name, extractor in feature_extractors(split["encoder"]).items():
        pairs, reference = as_features(split["pairs"], extractor), as_features(split["reference"], extractor)
        if name == "pooled":
            scorer, _ = fit(pairs, config, text_encoder)
            out["decomposition"] = decomposition(scorer, reference, digit_labels(seed, split), bad)
        out["regimes"][name] = {"dim": pairs.images.shape[1]}
        for delta in deltas:
            scorer, seconds = fit(pairs, replace(config, delta=delta), text_encoder)
            out["regimes"][name][f"delta={delta:g}"] = regime(scorer, seconds, reference, bad)
    out["seconds"] = time.perf_counter() - start
    return out


def report(run: dict) -> str:
    d = run["decomposition"]
    lines = [f"seed {run['seed']} ({run['seconds']:.0f} s); decomposition (pooled, delta 300), "
             f"self-check {d['self_check_relative_error']:.1e}:",
             f"  {'part':16s} {'refs':>6s} {'auroc':>6s} {'mean clean':>11s} {'mean bad':>10s} {'std clean':>10s}"]
    for k, a in d["auroc"].items():
        if k == "clip_score":
            lines.append(f"  {k:16s} {'':>6s} {a:6.3f}")
            continue
        refs = d["references_per_pair"].get(k, float(N_REFERENCE))
        lines.append(f"  {k:16s} {refs:6.1f} {a:6.3f} {d['mean_clean'][k]:11.2e} {d['mean_misaligned'][k]:10.2e} "
                     f"{d['std_clean'][k]:10.2e}")
    lines.append(f"  {'features':8s} {'delta':>6s} {'ecif':>6s} {'clip':>6s} {'self':>6s} {'loo':>6s} {'|grad|':>8s} {'fit s':>6s}")
    for name, rows in run["regimes"].items():
        for key, r in rows.items():
            if key != "dim":
                lines.append(f"  {name:8s} {key[6:]:>6s} {r['auroc_ecif']:6.3f} {r['auroc_clip_score']:6.3f} "
                             f"{r['auroc_self_influence']:6.3f} {r['auroc_loo_alignment']:6.3f} "
                             f"{r['fit_grad_norm']:8.1e} {r['fit_seconds']:6.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="100")
    parser.add_argument("--deltas", default="300,30,3")
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (small float64 ops: 1 is fastest)")
    parser.add_argument("--out", default="ecif_ceiling.json", help="file name under benchmarks/results/")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds, deltas = [int(s) for s in args.seeds.split(",")], [float(d) for d in args.deltas.split(",")]
    out: dict = {"config": EcifConfig(progress=False).to_params(), "seeds": seeds, "deltas": deltas,
                 "n_train": N_TRAIN, "n_reference": N_REFERENCE, "shuffled_fraction": FRACTION,
                 "torch_threads": torch.get_num_threads(), "runs": []}
    for seed in seeds:
        out["runs"].append(seed_run(seed, args.pretrain_epochs, deltas))
        print(report(out["runs"][-1]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
