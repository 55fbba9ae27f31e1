"""Detection of misaligned pairs by the combined score (issue 16, items 3-4 and "What it must show" item 3).

Data per seed: ``ecif_quality.make_split`` (1,797 digits -> 1,200 training pairs, 200 clean reference pairs,
SimCLR SmallCNN, MiniLM captions). Model: the convex image head (EcifScorer defaults), scored against the
reference through the product path (``EcifScorer.score``: ECIF, the CLIP score, the cosine under heads
fitted on the reference only, the combined score and is_misaligned at <= 2% of clean reference pairs).
Runs: (a) 20% shuffled captions; (b) systematic errors, ``mislabel_digit``: a share of one digit's images
captioned as another digit (the rest of the captions true); (c) the true captions ("clean": what the gate must
approve; false flags only).

Phases, kept apart:
- dev: seed 100 only, shuffled + the DEV_SYSTEMATIC digit pairs + clean. Chooses the combination's weights
  among WEIGHT_GRID (robust z of ECIF, CLIP score, reference-head cosine, reference caption loss; ECIF always
  weighted, with at least one other) by the issue's bar first (the number of dev runs where the combined
  AUROC >= max(ECIF, CLIP score)), then mean AUROC over the dev runs; and the group evidence's settings
  among GROUP_GRID: mean false-flag rate on the clean pairs of the 4 dev runs <= flag_share, then the highest
  mean recall of is_misaligned on the systematic dev runs -> results/ecif_detection_dev.json. Its choices are
  then written by hand into ``influencegate.ecif.combined.COMBINED_WEIGHTS`` and ``influencegate.ecif.groups``.
- eval: seeds 0, 1, 2 x (shuffled, EVAL_SYSTEMATIC, clean) with the product's settings as they are; no choice
  is made here -> results/ecif_detection.json: AUROC of combined, CLIP score, ECIF, reference-head cosine,
  reference caption loss and group evidence, recall of is_misaligned, its false-flag rate on the run's clean
  pairs, catch rate at inspection budgets.
- memorising: the LoRA model of ``ecif_setup`` (N_MEMO training pairs, 20% shuffled, its dev-chosen delta),
  projected ECIF (``ecif_fidelity``'s k and damping; P-space solves through Phi^T (C + damping)^-1 Phi), the
  same evidence and the product's weights (chosen on the convex dev seed; nothing is chosen here), on the dev
  seed and the evaluation seeds -> results/ecif_detection_memorising.json.
Run: python benchmarks/ecif_detection.py --phase dev|eval|memorising
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

import ecif_setup as setup
from ecif_fidelity import GN_DAMPING, PROJ_DIM
from ecif_quality import make_split
from influencegate.data.captions import mislabel_digit
from influencegate.ecif import EcifConfig, EcifScorer, PairSet, loss_gradient
from influencegate.ecif.combined import COMBINED_WEIGHTS, calibrated_flags, combined_score, group_score
from influencegate.ecif.evidence import FitSettings, reference_evidence
from influencegate.ecif.groups import CAPTION_NEIGHBOURS, GROUP_SHARE, GroupSettings
from influencegate.ecif.projected import ProjectedEcif, project_pairs, random_projection

RESULTS = Path(__file__).parent / "results"
DEV_SEED, EVAL_SEEDS = 100, (0, 1, 2)
#: (source digit, caption digit, share of the source digit's images): development pairs, evaluation pairs.
DEV_SYSTEMATIC = ((4, 9, 0.5), (2, 3, 0.5))
EVAL_SYSTEMATIC = ((3, 8, 0.5), (1, 7, 0.7), (5, 6, 0.5))
BUDGETS = (0.05, 0.10, 0.20)
N_MEMO = 128
EVIDENCE_SIGN = {"ecif": "misalignment_score", "clip": "clip_score", "reference_clip": "reference_clip_score",
                 "reference_caption_loss": "reference_caption_loss", "group": "group_score"}
#: (group size of the 1,200 pairs, caption_neighbours) of the group evidence tried on the dev seed.
GROUP_GRID = list(itertools.product((20, 40, 80, 160), (5, 10, 20)))
WEIGHT_GRID = [dict(zip(("ecif", "clip", "reference_clip", "reference_caption_loss"), w))
               for w in itertools.product((1.0,), (0.0, 0.5, 1.0, 2.0), (0.0, 0.5, 1.0, 2.0), (0.0, 0.5, 1.0, 2.0)) if any(w[1:])]


def runs(seed: int, systematic: tuple, pretrain_epochs: int):
    """(name, pairs, bad (N,) bool, split) for the seed's shuffled run, each systematic digit pair and the
    true captions ("clean": no wrong pair; what the gate must approve)."""
    split = make_split(seed, pretrain_epochs)
    yield "shuffled_20pct", split["pairs"], split["bad"], split
    rng = np.random.default_rng(seed + 3)
    clean = split["clean_pairs"]
    for source, target, share in systematic:
        captions, bad = mislabel_digit(clean.captions, split["train_labels"], source, target, share, rng)
        yield f"{source}->{target}", PairSet(clean.sample_ids, captions, clean.images), bad, split
    yield "clean", clean, np.zeros(len(clean), dtype=bool), split


def auroc(bad: np.ndarray, score: np.ndarray) -> float:
    """AUROC of score for the wrong pairs; NaN on a run without any."""
    return float(roc_auc_score(bad, score)) if bad.any() else float("nan")


def catch_rates(score: np.ndarray, bad: np.ndarray) -> dict[str, float]:
    """Share of the misaligned pairs among the top budget x N by score, for each inspection budget (NaN on a
    run without any)."""
    if not bad.any():
        return {f"top_{int(b * 100)}pct": float("nan") for b in BUDGETS}
    order = np.argsort(-score, kind="stable")
    return {f"top_{int(b * 100)}pct": float(bad[order[: int(round(b * len(score)))]].sum() / bad.sum()) for b in BUDGETS}


def score_run(pairs: PairSet, bad: np.ndarray, split: dict, config: EcifConfig) -> tuple[dict, EcifScorer]:
    """(metrics of the product table, the fitted scorer) of one run."""
    start = time.perf_counter()
    scorer = EcifScorer(config, image_encoder=split["encoder"]).fit(pairs)
    table = scorer.score(split["reference"]).iloc[: len(pairs)]
    oriented = {"combined": table["combined_score"].to_numpy()}
    oriented |= {name: scorer.evidence[name][0] for name in EVIDENCE_SIGN}
    metrics = {"n_pairs": len(pairs), "n_misaligned": int(bad.sum()), "fit_grad_norm": scorer.fit_result.grad_norm,
               **flag_metrics(bad, table["is_misaligned"].to_numpy()),
               **{f"auroc_{name}": auroc(bad, values) for name, values in oriented.items()},
               "flag_threshold": scorer.flag_rule["flag_threshold"], "group_threshold": scorer.flag_rule["group_threshold"],
               **{f"catch_{k}": catch_rates(oriented[k], bad) for k in ("combined", "ecif", "clip", "group")},
               "seconds": time.perf_counter() - start}
    metrics["combined_ge_max_ecif_clip"] = (metrics["auroc_combined"] >= max(metrics["auroc_ecif"], metrics["auroc_clip"])
                                            if bad.any() else None)
    return metrics, scorer


def flag_metrics(bad: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    """Recall of the flag (NaN without wrong pairs), its false-flag rate on the clean pairs, flagged share."""
    return {"recall": float(flagged[bad].mean()) if bad.any() else float("nan"),
            "clean_false_flag_rate": float(flagged[~bad].mean()), "flagged_fraction": float(flagged.mean())}


def group_candidates(scored: list[tuple[np.ndarray, EcifScorer, PairSet]], share: float) -> list[dict]:
    """For each GROUP_GRID setting: the evidence recomputed with it, the flags' recall on the systematic dev
    runs and false-flag rate on the clean pairs of every dev run."""
    out = []
    for group_size, neighbours in GROUP_GRID:
        rows = []
        for bad, scorer, reference in scored:
            cfg = scorer.config
            settings = FitSettings(cfg.reference_batch_size or cfg.batch_size, cfg.seed, cfg.max_iter, cfg.tol,
                                   cfg.exact_max_params, GroupSettings(group_size / len(bad), neighbours))
            evidence = reference_evidence(scorer.problem, scorer.theta, scorer.solver, scorer.evidence["ecif"][0],
                                          scorer.image_inputs(reference.images), scorer.text_inputs(reference.captions),
                                          settings)
            rows.append(flag_metrics(bad, calibrated_flags(evidence, share)[1]) | {"auroc_group": auroc(bad, evidence["group"][0])})
        systematic = [r["recall"] for r in rows[1:] if r["recall"] == r["recall"]]
        out.append({"group_size": group_size, "caption_neighbours": neighbours, "runs": rows,
                    "mean_systematic_recall": float(np.mean(systematic)),
                    "mean_clean_false_flag_rate": float(np.mean([r["clean_false_flag_rate"] for r in rows]))})
    return out


def dev_phase(config: EcifConfig, pretrain_epochs: int) -> dict:
    """Score the dev runs, then the mean AUROC of every candidate weighting; the best is the choice."""
    rows, scored = [], []
    for name, pairs, bad, split in runs(DEV_SEED, DEV_SYSTEMATIC, pretrain_epochs):
        metrics, scorer = score_run(pairs, bad, split, config)
        rows.append({"seed": DEV_SEED, "run": name, **metrics})
        scored.append((bad, scorer, split["reference"]))
        print(json.dumps(rows[-1]), flush=True)
    groups = group_candidates(scored, config.flag_share)
    allowed = [g for g in groups if g["mean_clean_false_flag_rate"] <= config.flag_share] or groups
    group_choice = max(allowed, key=lambda g: g["mean_systematic_recall"])
    evidences = [(bad, scorer.evidence) for bad, scorer, _ in scored if bad.any()]
    candidates = []
    bars = [max(r["auroc_ecif"], r["auroc_clip"]) for r in rows if r["n_misaligned"]]
    for weights in WEIGHT_GRID:
        aurocs = [float(roc_auc_score(bad, combined_score(ev, weights)[0])) for bad, ev in evidences]
        flags = [(bad, calibrated_flags(ev, config.flag_share, weights)[1]) for bad, ev in evidences]
        candidates.append({"weights": weights, "aurocs": aurocs, "mean_auroc": float(np.mean(aurocs)),
                           "recalls": [float(f[bad].mean()) for bad, f in flags],
                           "clean_false_flag_rates": [float(f[~bad].mean()) for bad, f in flags],
                           "runs_ge_max_ecif_clip": int(sum(a >= b for a, b in zip(aurocs, bars)))})
    best = max(candidates, key=lambda c: (c["runs_ge_max_ecif_clip"], c["mean_auroc"]))
    return {"seed": DEV_SEED, "systematic": DEV_SYSTEMATIC, "runs": rows, "candidates": candidates,
            "chosen_weights": best["weights"],
            "criterion": "most dev runs with combined AUROC >= max(ECIF, CLIP score), then mean AUROC",
            "group_candidates": groups, "group_settings_in_use": [GROUP_SHARE, CAPTION_NEIGHBOURS],
            "chosen_group": [group_choice["group_size"], group_choice["caption_neighbours"]],
            "group_criterion": "mean clean false-flag rate over the 4 dev runs <= flag_share, then the highest "
                               "mean recall of the flag on the systematic dev runs"}


def summarise(rows: list[dict]) -> dict:
    """Mean, sample std, min and max of every AUROC / rate over rows, and the bars of the issue."""
    keys = [k for k in rows[0] if k.startswith("auroc_") or k in ("recall", "clean_false_flag_rate", "flagged_fraction")]
    out = {k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows], ddof=1)),
               "min": float(min(r[k] for r in rows)), "max": float(max(r[k] for r in rows))} for k in keys}
    for kind in ("combined", "ecif", "clip", "group"):
        out[f"catch_{kind}"] = {b: float(np.mean([r[f"catch_{kind}"][b] for r in rows])) for b in rows[0][f"catch_{kind}"]}
    out["n_runs"] = len(rows)
    out["combined_ge_max_ecif_clip_runs"] = int(sum(r["combined_ge_max_ecif_clip"] for r in rows))
    out["combined_ge_clip_runs"] = int(sum(r["auroc_combined"] >= r["auroc_clip"] for r in rows))
    out["recall_ge_50pct_runs"] = int(sum(r["recall"] >= 0.5 for r in rows))
    out["clean_false_flag_le_2pct_runs"] = int(sum(r["clean_false_flag_rate"] <= 0.02 for r in rows))
    return out


def eval_phase(config: EcifConfig, pretrain_epochs: int) -> dict:
    rows = []
    for seed in EVAL_SEEDS:
        for name, pairs, bad, split in runs(seed, EVAL_SYSTEMATIC, pretrain_epochs):
            rows.append({"seed": seed, "run": name, **score_run(pairs, bad, split, config)[0]})
            print(json.dumps(rows[-1]), flush=True)
    shuffled = [r for r in rows if r["run"] == "shuffled_20pct"]
    systematic = [r for r in rows if r["run"] not in ("shuffled_20pct", "clean")]
    clean = [r["flagged_fraction"] for r in rows if r["run"] == "clean"]
    return {"seeds": EVAL_SEEDS, "systematic": EVAL_SYSTEMATIC, "weights": dict(COMBINED_WEIGHTS),
            "group_settings": [GROUP_SHARE, CAPTION_NEIGHBOURS], "runs": rows,
            "summary": {"shuffled": summarise(shuffled), "systematic": summarise(systematic),
                        "clean": {"flagged_fraction": clean, "max": max(clean)}}}


class ProjectedSolver:
    """H^-1 b ~= Phi^T (C + damping I)^-1 Phi b in parameter space (P,), from a ProjectedEcif."""

    def __init__(self, ecif: ProjectedEcif) -> None:
        self.ecif = ecif

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        phi = self.ecif.pairs.phi
        return phi.T @ self.ecif.solve(phi @ b)


def memorising_run(seed: int, flag_share: float) -> dict:
    """One shuffled-caption run of the memorising LoRA model: AUROCs, flags and catch rates."""
    start = time.perf_counter()
    split = setup.make_split(seed, N_MEMO)
    problem = setup.make_problem(split, "memorising", seed)
    theta, _, info = setup.train(problem)
    pairs = project_pairs(problem, theta, random_projection(problem.n_params, min(PROJ_DIM, problem.n_params), seed))
    solver = ProjectedSolver(ProjectedEcif(pairs, GN_DAMPING * float(pairs.curvature.trace()) / len(pairs.curvature)))
    pos, neg = solver.ecif.influence(loss_gradient(setup.ref_loss(split, problem, seed), theta))
    evidence = reference_evidence(problem, theta, solver, -(pos + neg).numpy(),
                                  setup.model_inputs(split, problem, split.ref_images), split.ref_texts,
                                  FitSettings(setup.BATCH, seed, 1000, 1e-7, 2000))
    score, flagged, thresholds = calibrated_flags(evidence, flag_share)
    bad = split.bad
    oriented = {"combined": score} | {name: values for name, (values, _) in evidence.items()}
    row = {"seed": seed, "run": "shuffled_20pct", "n_pairs": N_MEMO, "n_misaligned": int(bad.sum()), **info,
           **{f"auroc_{name}": float(roc_auc_score(bad, values)) for name, values in oriented.items()},
           "recall": float(flagged[bad].mean()), "clean_false_flag_rate": float(flagged[~bad].mean()),
           "flagged_fraction": float(flagged.mean()), "flag_threshold": thresholds["combined"],
           "group_threshold": thresholds["group"],
           **{f"catch_{k}": catch_rates(oriented[k], bad) for k in ("combined", "ecif", "clip", "group")},
           "seconds_total": time.perf_counter() - start}
    row["combined_ge_max_ecif_clip"] = row["auroc_combined"] >= max(row["auroc_ecif"], row["auroc_clip"])
    return row


def memorising_phase(config: EcifConfig) -> dict:
    rows = []
    for seed in (DEV_SEED, *EVAL_SEEDS):
        rows.append(memorising_run(seed, config.flag_share))
        print(json.dumps(rows[-1]), flush=True)
    evaluation = [r for r in rows if r["seed"] != DEV_SEED]
    return {"model": "memorising LoRA (ecif_setup)", "weights": dict(COMBINED_WEIGHTS), "dev_seed": DEV_SEED,
            "eval_seeds": EVAL_SEEDS, "projection_dim": PROJ_DIM, "gn_damping": GN_DAMPING, "runs": rows,
            "summary": {"shuffled_eval": summarise(evaluation)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=("dev", "eval", "memorising"), required=True)
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = EcifConfig(progress=False)
    start = time.perf_counter()
    phase = {"dev": lambda: dev_phase(config, args.pretrain_epochs), "eval": lambda: eval_phase(config, args.pretrain_epochs),
             "memorising": lambda: memorising_phase(config)}[args.phase]
    out = {"phase": args.phase, "model": "convex image head (EcifConfig defaults)", "config": config.to_params(),
           "flag_share": config.flag_share, "budgets": BUDGETS, **phase()}
    if args.phase == "eval":
        dev_file = RESULTS / "ecif_detection_dev.json"
        out["dev_chosen_weights"] = json.loads(dev_file.read_text())["chosen_weights"] if dev_file.exists() else None
    out["seconds"] = time.perf_counter() - start
    name = {"dev": "ecif_detection_dev.json", "eval": "ecif_detection.json",
            "memorising": "ecif_detection_memorising.json"}[args.phase]
    (RESULTS / name).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out.get("summary", out.get("chosen_weights")), indent=1))


if __name__ == "__main__":
    main()
