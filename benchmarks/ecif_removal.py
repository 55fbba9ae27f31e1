"""Removal that helps and trace-back tested by removal, on the convex head (issue 16, "what it must show"
items 2 and 4).

Data per seed: ``ecif_setup.make_split`` with N_TRAIN training pairs (200 clean reference pairs, the rest
held-out test images with their true digits), the convex image head of ``ecif_setup.make_problem`` (fixed
batches of 16, delta 300, strictly convex: one optimum, so retraining from the initialisation and from
theta_hat reach the same point) trained by ``ecif_setup.train`` (10 Adam epochs kept as TracIn checkpoints,
then L-BFGS + Newton to |grad R| <= TOL). Runs: 20% shuffled captions, and systematic errors
(``ecif_detection``'s digit pairs: a share of one digit's images captioned as another, 5-7% of the pairs).

Item 2, removal: every method ranks the training pairs (remove first = predicted to help the clean
reference loss L' most, or most misaligned): ecif (-(positive_if + negative_if) against L', exact CG
solves), combined (``ecif.combined`` on ECIF, CLIP score and reference-head cosine), clip (-cosine),
tracin (exact per-pair gradients of Pos_n at the 10 checkpoints, learning-rate weighted: no projection),
trak (``ecif_peers.trak``, dattri), random, and oracle (the truly misaligned pairs first: a ceiling). The
top k (K_GRID x N) are removed and the head retrained from the same initialisation to TOL; metric: zero-shot
accuracy on the test images (10 digits, prompt-ensembled captions) against training on all pairs. For ECIF
also the parameter edit theta + H^-1 sum grad(Pos_n + Neg_n) (``influence.removal_edit``, a fresh CG solver
included in its time). k is chosen per method on the development seed only (best mean dev accuracy).

Item 4, trace-back: QUERIES mispredicted test images per run (seeded draw among the mispredictions); a
query's loss L_q is the cross-entropy of its image over the 10 digits' mean prompt features, at its true
digit (``ecif.query_loss``). Ten pairs are removed by each rule and the head retrained warm-started from
theta_hat to TOL (strictly convex: the same optimum as from the initialisation; the first query of every run
also retrains from the initialisation and records the difference): ecif (lowest positive_if + negative_if
on L_q), ecif_relative (lowest l-relative influence, ``ecif.relative_influence``: divided by
sqrt(g_n^T H^-1 g_n), the self-influences from the rank-LOWRANK Lanczos inverse that EcifScorer uses
for P > exact_max_params, checked against CG on CHECK_PAIRS pairs), tracin (lowest TracIn on L_q), clip_nearest
(training images whose embedding has the highest cosine with the query's), random. Reported: the share of
queries where ECIF's removal lowers L_q more than each alternative.
Phases: dev (seed 100: shuffled + DEV_SYSTEMATIC; chooses k) -> results/ecif_removal_dev.json; eval (seeds
0, 1, 2: shuffled + EVAL_SYSTEMATIC, k from the dev file) -> results/ecif_removal.json.
Run: python benchmarks/ecif_removal.py --phase dev|eval [--queries 4]
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import ecif_peers as peers
import ecif_setup as setup
from ecif_detection import DEV_SEED, DEV_SYSTEMATIC, EVAL_SEEDS, EVAL_SYSTEMATIC
from influencegate.data.captions import caption_digits, mislabel_digit, shuffle_captions
from influencegate.ecif import (CGSolver, LowRankSolver, fit_contrastive, loss_gradient, make_batches, pair_gradients,
                                pair_influence, query_loss, relative_influence, removal_edit, self_influence)
from influencegate.ecif.combined import combined_score
from influencegate.ecif.evidence import FitSettings, reference_evidence

RESULTS = Path(__file__).parent / "results"
N_TRAIN, TOL, K_GRID, TRACE_K, LOWRANK, CHECK_PAIRS = 800, 1e-8, (0.02, 0.05, 0.10), 10, 300, 8
METHODS = ("ecif", "combined", "clip", "tracin", "trak", "random", "oracle")
ALTERNATIVES = ("random", "clip_nearest", "tracin")


def runs(seed: int, systematic: tuple):
    """(name, split) for the seed's 20%-shuffled run and each systematic digit pair (one SimCLR encoder)."""
    split = setup.make_split(seed, N_TRAIN, fraction=0.0)
    clean = caption_digits(split.image_labels, seed)  # make_split's captions
    captions, caption_labels, bad = shuffle_captions(clean, split.image_labels, setup.FRACTION, seed + 1)
    yield "shuffled_20pct", replace(split, texts=setup.text_features(captions), bad=bad, caption_labels=caption_labels)
    rng = np.random.default_rng(seed + 3)
    for source, target, share in systematic:
        captions, bad = mislabel_digit(clean, split.image_labels, source, target, share, rng)
        labels = np.where(bad, target, split.image_labels)
        yield f"{source}->{target}", replace(split, texts=setup.text_features(captions), bad=bad, caption_labels=labels)


def tracin(problem, checkpoints: list[torch.Tensor], losses: list) -> np.ndarray:
    """TracIn with exact per-pair gradients: tau_qn = sum_c lr grad L_q(theta_c) . grad Pos_n(theta_c), the
    predicted change of L_q when pair n is removed (Q x N)."""
    out = torch.zeros(len(losses), len(problem.images), dtype=torch.float64)
    for theta_c in checkpoints:
        g_pos, _ = pair_gradients(problem, theta_c)
        out += setup.TRAIN_LR * torch.stack([loss_gradient(loss, theta_c) for loss in losses]) @ g_pos.T
    return out.numpy()


def rankings(split: setup.Split, problem, theta: torch.Tensor, checkpoints: list, solver: CGSolver, seed: int
             ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """{method: removal priority (N,), higher = removed first}, and seconds per method."""
    seconds, start = {}, time.perf_counter()
    loss = setup.ref_loss(split, problem, seed)
    pos, neg = pair_influence(problem, theta, solver.solve(loss_gradient(loss, theta)))
    out = {"ecif": -(pos + neg).numpy()}
    seconds["ecif"] = time.perf_counter() - start
    start = time.perf_counter()
    ref_inputs = setup.model_inputs(split, problem, split.ref_images)
    evidence = reference_evidence(problem, theta, solver, out["ecif"], ref_inputs, split.ref_texts,
                                  FitSettings(setup.BATCH, seed, 2000, TOL, 0))
    out["combined"], out["clip"] = combined_score(evidence)[0], evidence["clip"][0]
    seconds["combined"] = time.perf_counter() - start
    start = time.perf_counter()
    out["tracin"] = -tracin(problem, checkpoints, [loss])[0]
    seconds["tracin"] = time.perf_counter() - start
    start = time.perf_counter()
    reference = peers.batch_samples(ref_inputs, split.ref_texts, make_batches(len(ref_inputs), setup.BATCH, seed))
    out["trak"] = -peers.trak(problem, theta, reference).numpy()
    seconds["trak"] = time.perf_counter() - start
    rng = np.random.default_rng(seed + 11)
    out["random"] = rng.random(len(split.bad))
    out["oracle"] = split.bad + rng.random(len(split.bad)) * 0.5
    return out, seconds


def retrain(problem, start: torch.Tensor, drop: np.ndarray) -> torch.Tensor:
    """The head retrained without the pairs ``drop`` from ``start`` to |grad R| <= TOL (P,)."""
    fit = fit_contrastive(problem.with_batches(problem.batches.without(drop.tolist())), start, 2000, TOL, 0, False)
    if not fit.converged:
        raise RuntimeError(f"retraining stopped at |grad R| = {fit.grad_norm:.1e}")
    return fit.theta


def removal_rows(split: setup.Split, problem, theta: torch.Tensor, priority: dict[str, np.ndarray]) -> list[dict]:
    """Accuracy after retraining without each method's top k, for every k in K_GRID; ECIF's edit beside it."""
    rows = []
    for k in K_GRID:
        size = int(round(k * len(split.bad)))
        for method, score in priority.items():
            drop = np.argsort(-score, kind="stable")[:size]
            start = time.perf_counter()
            retrained = retrain(problem, problem.anchor, drop)
            row = {"method": method, "k": k, "removed": size, "removed_misaligned": int(split.bad[drop].sum()),
                   "accuracy": setup.zero_shot(split, problem, retrained), "retrain_seconds": time.perf_counter() - start}
            if method == "ecif":
                start = time.perf_counter()
                edited = removal_edit(problem, theta, CGSolver(problem, theta), drop.tolist())
                row |= {"edit_seconds": time.perf_counter() - start, "edit_accuracy": setup.zero_shot(split, problem, edited),
                        "edit_distance_ratio": float((edited - retrained).norm() / (retrained - theta).norm())}
            rows.append(row)
    return rows


def trace_back(split: setup.Split, problem, theta: torch.Tensor, checkpoints: list, solver: CGSolver, seed: int,
               queries: int) -> dict:
    """Item 4 on one trained head: per query, the change of L_q after removing each rule's ten pairs."""
    test_inputs = setup.model_inputs(split, problem, split.test_images)
    dual = problem.model.module_at(theta, torch.float64)
    wrong = np.flatnonzero(dual.zero_shot(test_inputs, split.prompts).numpy() != split.test_labels)
    rng = np.random.default_rng(seed + 13)
    chosen = np.sort(rng.choice(wrong, size=min(queries, len(wrong)), replace=False))
    candidates = split.prompts.mean(1)
    losses = [query_loss(problem.model, test_inputs[i:i + 1], candidates, int(split.test_labels[i])) for i in chosen]
    start = time.perf_counter()
    g_pos, g_neg = pair_gradients(problem, theta)
    self_inf = sum(self_influence(g_pos, g_neg, LowRankSolver(problem, theta, LOWRANK, 0.0, seed)))
    g = (g_pos + g_neg)[:CHECK_PAIRS]
    exact = torch.stack([g[i] @ solver.solve(g[i]) for i in range(CHECK_PAIRS)])
    check = {"seconds": time.perf_counter() - start,
             "max_relative_error_vs_cg": float(((self_inf[:CHECK_PAIRS] - exact).abs() / exact).max())}
    traced = tracin(problem, checkpoints, losses)
    with torch.no_grad():
        image_emb = torch.nn.functional.normalize(dual.embed_images(problem.images), dim=-1)
        query_emb = torch.nn.functional.normalize(dual.embed_images(test_inputs[chosen]), dim=-1)
    rows = []
    for q, (index, loss) in enumerate(zip(chosen, losses)):
        pos, neg = pair_influence(problem, theta, solver.solve(loss_gradient(loss, theta)))
        tau = pos + neg
        drops = {"ecif": np.argsort(tau.numpy(), kind="stable")[:TRACE_K],
                 "ecif_relative": np.argsort(relative_influence(tau, self_inf).numpy(), kind="stable")[:TRACE_K],
                 "tracin": np.argsort(traced[q], kind="stable")[:TRACE_K],
                 "clip_nearest": np.argsort(-(image_emb @ query_emb[q]).numpy(), kind="stable")[:TRACE_K],
                 "random": rng.choice(len(tau), size=TRACE_K, replace=False)}
        base = float(loss(theta))
        row = {"query": int(index), "label": int(split.test_labels[index]), "loss": base,
               "predicted_ecif": float(tau[drops["ecif"]].sum()),
               "change": {m: float(loss(retrain(problem, theta, d))) - base for m, d in drops.items()},
               "misaligned_in_top": {m: int(split.bad[d].sum()) for m, d in drops.items()}}
        if q == 0:
            cold = float(loss(retrain(problem, problem.anchor, drops["ecif"]))) - base
            row["warm_vs_cold_change_difference"] = abs(cold - row["change"]["ecif"])
        rows.append(row)
    return {"n_mispredicted": int(len(wrong)), "self_influence_check": check, "queries": rows}


def run(seed: int, name: str, split: setup.Split, queries: int) -> dict:
    start = time.perf_counter()
    problem = setup.make_problem(split, "convex", seed)
    theta, checkpoints, info = setup.train(problem, tol=TOL)
    solver = CGSolver(problem, theta)
    priority, seconds = rankings(split, problem, theta, checkpoints, solver, seed)
    row = {"seed": seed, "run": name, "n_train": N_TRAIN, "n_misaligned": int(split.bad.sum()), **info,
           "accuracy_all_pairs": setup.zero_shot(split, problem, theta), "ranking_seconds": seconds,
           "removal": removal_rows(split, problem, theta, priority),
           "trace_back": trace_back(split, problem, theta, checkpoints, solver, seed, queries) if queries else None}
    row["seconds"] = time.perf_counter() - start
    return row


def choose_k(rows: list[dict]) -> dict[str, float]:
    """Per method, the k of K_GRID with the best mean dev accuracy (ties: the smaller k)."""
    def mean_accuracy(method: str, k: float) -> float:
        return float(np.mean([r["accuracy"] for row in rows for r in row["removal"] if r["method"] == method and r["k"] == k]))
    return {m: max(K_GRID, key=lambda k: (mean_accuracy(m, k), -k)) for m in METHODS}


def stats(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "min": float(np.min(values)), "max": float(np.max(values)), "n": len(values)}


def removal_summary(rows: list[dict], chosen_k: dict[str, float]) -> dict:
    """Accuracy gain over all pairs per method at its dev-chosen k, ECIF's edit against retraining, the bars."""
    def at(row: dict, method: str) -> dict:
        return next(r for r in row["removal"] if r["method"] == method and r["k"] == chosen_k[method])
    gains = {m: [at(row, m)["accuracy"] - row["accuracy_all_pairs"] for row in rows] for m in METHODS}
    ecif = [at(row, "ecif") for row in rows]
    out = {"gain": {m: stats(v) for m, v in gains.items()},
           "edit_gap": stats([abs(r["edit_accuracy"] - r["accuracy"]) for r in ecif]),
           "retrain_over_edit_seconds": stats([r["retrain_seconds"] / r["edit_seconds"] for r in ecif])}
    peers_ = [m for m in METHODS if m not in ("ecif", "random", "oracle")]
    out["bars"] = {"ecif_gain_ge_1pt_mean": out["gain"]["ecif"]["mean"] >= 0.01,
                   "ecif_ge_each_peer_mean": {m: out["gain"]["ecif"]["mean"] >= out["gain"][m]["mean"] for m in peers_},
                   "ecif_ge_peer_runs": {m: int(sum(a >= b for a, b in zip(gains["ecif"], gains[m]))) for m in peers_},
                   "edit_within_half_point_runs": int(sum(abs(r["edit_accuracy"] - r["accuracy"]) <= 0.005 for r in ecif)),
                   "edit_2x_faster_runs": int(sum(r["retrain_seconds"] >= 2 * r["edit_seconds"] for r in ecif))}
    return out


def trace_summary(rows: list[dict]) -> dict:
    """Share of queries where ECIF's (plain, relative) removal lowers L_q more than each alternative."""
    queries = [q for row in rows if row["trace_back"] for q in row["trace_back"]["queries"]]
    out = {"n_queries": len(queries),
           "mean_change": {m: float(np.mean([q["change"][m] for q in queries])) for m in queries[0]["change"]},
           "max_warm_vs_cold_difference": max(q.get("warm_vs_cold_change_difference", 0.0) for q in queries)}
    for variant in ("ecif", "ecif_relative"):
        out[f"{variant}_beats"] = {alt: float(np.mean([q["change"][variant] < q["change"][alt] for q in queries]))
                                   for alt in (*ALTERNATIVES, *({"ecif", "ecif_relative"} - {variant}))}
    return out


def summarise(out: dict) -> None:
    """out["summary"]: removal (shuffled and systematic runs apart) at out["chosen_k"], and trace-back."""
    out["summary"] = {kind: removal_summary([r for r in out["rows"] if (r["run"] == "shuffled_20pct") == (kind == "shuffled")],
                                            out["chosen_k"]) for kind in ("shuffled", "systematic")}
    out["summary"]["trace_back"] = trace_summary(out["rows"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=("dev", "eval"), required=True)
    parser.add_argument("--queries", type=int, default=4, help="mispredicted test queries traced back per run")
    parser.add_argument("--summary-only", action="store_true", help="recompute the summary of the phase's JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dev_file = RESULTS / "ecif_removal_dev.json"
    if args.summary_only:
        path = dev_file if args.phase == "dev" else RESULTS / "ecif_removal.json"
        out = json.loads(path.read_text())
        summarise(out)
        path.write_text(json.dumps(out, indent=1) + "\n")
        return
    seeds, systematic = ((DEV_SEED,), DEV_SYSTEMATIC) if args.phase == "dev" else (EVAL_SEEDS, EVAL_SYSTEMATIC)
    chosen_k = json.loads(dev_file.read_text())["chosen_k"] if args.phase == "eval" else None
    out_file = dev_file if args.phase == "dev" else RESULTS / "ecif_removal.json"
    out = {"phase": args.phase, "seeds": seeds, "systematic": systematic, "n_train": N_TRAIN, "tol": TOL,
           "k_grid": K_GRID, "trace_k": TRACE_K, "lowrank_rank": LOWRANK, "rows": []}
    start = time.perf_counter()
    for seed in seeds:
        for name, split in runs(seed, systematic):
            out["rows"].append(run(seed, name, split, args.queries))
            print(json.dumps({k: out["rows"][-1][k] for k in ("seed", "run", "accuracy_all_pairs", "seconds")}), flush=True)
            out["seconds"] = time.perf_counter() - start
            out_file.write_text(json.dumps(out, indent=1) + "\n")
    if args.phase == "dev":
        out["chosen_k"] = choose_k(out["rows"])
        out["criterion"] = "per method, the k of k_grid with the best mean dev accuracy (ties: smaller k)"
    else:
        out["chosen_k"] = chosen_k
    summarise(out)
    out_file.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["summary"], indent=1))


if __name__ == "__main__":
    main()
