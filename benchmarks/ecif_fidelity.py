"""Fidelity of ECIF and its peers against retraining (issue 16, "what it must show" item 1).

Per seed and model (``ecif_setup``: the convex head and the memorising LoRA model, n_train pairs, 20%
shuffled captions), the target is the clean reference loss L' (200 pairs) and every method predicts the
change of L' when pairs are removed (``ecif_peers``'s convention):
- ecif: the convex head's exact ECIF (CG solves, ``influence.pair_influence``); the memorising model's
  projected ECIF (``ecif.projected``): since session 16 the exact Hessian projected on the Krylov space of
  grad L' (``chosen_ecif``, k = KRYLOV_DIM, undamped; chosen on dev seeds 101-102 by ``ecif_curvature.py``),
  before it (ecif_gauss_newton_k512, kept beside it) Gauss-Newton in a random projection, k = PROJ_DIM, damping
  GN_DAMPING x the mean eigenvalue; that one as ecif_projected on the convex head;
- ecif_positive: its positive part alone; logra, tracin, trak: ``ecif_peers``;
- ecif_exact_hessian (memorising model only, a diagnostic, not the chosen ECIF): ECIF with the exact Hessian
  at theta_hat (its Cholesky factor from the fit, undamped: theta_hat is a strict local minimum).
Truth, by retraining warm-started from theta_hat (the same fixed batches less the removed pairs) until
|grad R| <= RETRAIN_TOL (convex head, ``fit_contrastive``: L-BFGS, then Newton) or RETRAIN_TOL_MEMORISING
(memorising model, ``newton.retrain_to_tolerance``: L-BFGS preconditioned by RetrainPreconditioner down to
|grad R| <= 1e-2, then truncated Newton-CG on exact Hessian-vector products with an Armijo line search, the
preconditioner refreshed from the dense Hessian if the steps stall). Each row records how many retrainings
reached the tolerance, the largest final |grad R| and the time; ``--start-check`` retrains one half-subset
from other starts (development seed) to see whether the optimum depends on the start. Then
- loo: Pearson of tau_n with L'(theta_-n) - L'(theta_hat) over ``--removals`` random pairs;
- lds: Spearman over ``--subsets`` random half-subsets of sum_{n removed} tau_n with the true change.
Development seed 100 (the memorising model's delta, ``ecif_setup``); evaluation seeds 0, 1, 2.
The retrainings are stored (true_loo / chosen, true_lds / halves, each retraining's record, every method's
tau): ``ecif_curvature.py`` re-scores an estimator on them without retraining; ``--resume`` continues a stopped
run from its partial file (written after every retraining).
Run: python benchmarks/ecif_fidelity.py --seeds 0 [--n-train 128] [--removals 64] [--subsets 50]; one
JSON per seed (ecif_fidelity_seed{S}.json), merged by --merge into benchmarks/results/ecif_fidelity.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).parent))
import ecif_peers as peers  # noqa: E402
import ecif_setup as setup  # noqa: E402

from influencegate.ecif import (CGSolver, dense_hessian, fit_contrastive, loss_gradient, make_batches,  # noqa: E402
                               pair_influence)
from influencegate.ecif.newton import retrain_to_tolerance  # noqa: E402
from influencegate.ecif.projected import (ProjectedEcif, krylov_projection, project_pairs,  # noqa: E402
                                          random_projection)

PROJ_DIM = 512
GN_DAMPING = 1e-3
LOGRA_DAMPING = 1e-3
KRYLOV_DIM = 128  # the memorising model's ECIF since session 16 (``ecif_curvature.py``, dev seeds 101-102)
RETRAIN_TOL = 1e-7
RETRAIN_MAX_ITER = 150  # convex head (it reaches RETRAIN_TOL within them)
RETRAIN_TOL_MEMORISING = 1e-5  # |grad R| of the memorising model's retrainings: the error of L' there is about
# |grad L'| |grad R| / lambda_min(H) (lambda_min ~ 15 on dev seed 101, |grad L'| ~ 13 in each row): < 1e-5 nats,
# against true changes spread by 0.02 (leave-one-out) and 0.2 nats (half-subsets)


def chosen_ecif(problem, theta: torch.Tensor, grad_ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The memorising model's ECIF (positive_if, negative_if), each (N,): the exact Hessian projected on the
    Krylov space of grad L' (KRYLOV_DIM rows, ``krylov_projection``; 2 KRYLOV_DIM Hessian-vector products),
    undamped (theta_hat is a strict local minimum), damped by GN_DAMPING x the mean eigenvalue if not."""
    pairs = project_pairs(problem, theta, krylov_projection(problem.hessian_operator(theta), grad_ref,
                                                            min(KRYLOV_DIM, problem.n_params)), "hessian")
    try:
        return ProjectedEcif(pairs).influence(grad_ref)
    except ArithmeticError:
        return ProjectedEcif(pairs, GN_DAMPING * float(pairs.curvature.trace()) / len(pairs.curvature)).influence(grad_ref)


def method_scores(split: setup.Split, problem, theta: torch.Tensor, checkpoints: list, loss, seed: int,
                  lower: torch.Tensor | None = None) -> tuple[dict, dict]:
    """tau (N,) of every method, and seconds per method (lower: the Cholesky factor of the memorising
    model's Hessian at theta_hat, for ecif_exact_hessian)."""
    out, seconds = {}, {}
    grad_ref = loss_gradient(loss, theta)
    start = time.perf_counter()
    phi = random_projection(problem.n_params, min(PROJ_DIM, problem.n_params), seed)
    pairs = project_pairs(problem, theta, phi, "gauss_newton")
    damping = GN_DAMPING * float(pairs.curvature.trace()) / len(pairs.curvature)
    pos, neg = ProjectedEcif(pairs, damping).influence(grad_ref)
    seconds["ecif_projected"] = time.perf_counter() - start
    out["ecif_projected"], out["ecif_positive"] = pos + neg, pos
    if problem.model.module.image_encoder is None:  # convex head: the exact ECIF by CG
        start = time.perf_counter()
        cg_pos, cg_neg = pair_influence(problem, theta, CGSolver(problem, theta).solve(grad_ref))
        seconds["ecif"] = time.perf_counter() - start
        out["ecif"], out["ecif_positive"] = cg_pos + cg_neg, cg_pos
    else:  # the memorising model: the Krylov-projected Hessian (session 16); the Gauss-Newton k 512 beside it
        out["ecif_gauss_newton_k512"], out["ecif_positive_gauss_newton_k512"] = out.pop("ecif_projected"), pos
        seconds["ecif_gauss_newton_k512"] = seconds.pop("ecif_projected")
        start = time.perf_counter()
        chosen_pos, chosen_neg = chosen_ecif(problem, theta, grad_ref)
        seconds["ecif"] = time.perf_counter() - start
        out["ecif"], out["ecif_positive"] = chosen_pos + chosen_neg, chosen_pos
        start = time.perf_counter()
        exact_pos, exact_neg = pair_influence(problem, theta, torch.cholesky_solve(grad_ref[:, None], lower)[:, 0])
        seconds["ecif_exact_hessian"] = time.perf_counter() - start
        out["ecif_exact_hessian"] = exact_pos + exact_neg
    start = time.perf_counter()
    out["logra"] = peers.logra(pairs, grad_ref, LOGRA_DAMPING)
    seconds["logra"] = time.perf_counter() - start
    inputs = setup.model_inputs(split, problem, split.ref_images)
    reference = peers.batch_samples(inputs, split.ref_texts, make_batches(len(inputs), setup.BATCH, seed))
    for name, run in (("tracin", lambda: peers.tracin(problem, checkpoints, setup.TRAIN_LR, reference)),
                      ("trak", lambda: peers.trak(problem, theta, reference))):
        start = time.perf_counter()
        out[name] = run()
        seconds[name] = time.perf_counter() - start
    return {k: v.detach().numpy() for k, v in out.items()}, seconds


class RetrainPreconditioner:
    """For the memorising model: the Cholesky factor of M_f = delta I + f (H_hat - delta I) made positive
    (eigenvalues delta + f (lambda - delta), >= delta (1 - f) + f lambda > 0), H_hat the dense Hessian at
    theta_hat (from its Cholesky factor), f = (share of pairs kept)^2: the data term's curvature scaled
    down with the pairs removed, a preconditioner for the retraining's L-BFGS and Newton steps. On the
    development seed 101 (delta 200) a half-subset retraining reached |grad R| 2e-8 in 600 iterations with
    f = 0.3 and stopped at 0.66 (f = 0.5) and 7.7 (f = 1, H_hat itself); the square gives 0.25."""

    def __init__(self, lower: torch.Tensor, delta: float) -> None:
        self.eigenvalues, self.vectors = torch.linalg.eigh(lower @ lower.T)
        self.delta = delta

    def __call__(self, kept_share: float) -> torch.Tensor:
        scaled = self.delta + kept_share * (self.eigenvalues - self.delta)
        return torch.linalg.cholesky((self.vectors * scaled) @ self.vectors.T)


def retrained_change(problem, theta: torch.Tensor, loss, drop: np.ndarray,
                     preconditioner: RetrainPreconditioner | None = None, start: torch.Tensor | None = None
                     ) -> tuple[float, bool, float, float]:
    """L'(theta_without) - L'(theta_hat), theta_without retrained from start (default theta_hat) to
    |grad R| <= RETRAIN_TOL (convex) or RETRAIN_TOL_MEMORISING (module doc); whether it got there, its
    final |grad R| and the seconds taken."""
    sub = problem.with_batches(problem.batches.without(drop.tolist()))
    start = theta if start is None else start
    if preconditioner is None:
        fit = fit_contrastive(sub, start, max_iter=RETRAIN_MAX_ITER, tol=RETRAIN_TOL, exact_max_params=0, progress=False)
    else:
        fit, _ = retrain_to_tolerance(sub, start, RETRAIN_TOL_MEMORISING,
                                      preconditioner((1 - len(drop) / problem.batches.n_pairs) ** 2))
    return float(loss(fit.theta) - loss(theta)), fit.converged, fit.grad_norm, fit.seconds


def summarise(row: dict, tau: dict, chosen: np.ndarray, halves: list, loo: list, lds: list, start: float) -> dict:
    """The row with the correlations over the retrainings done so far (``loo_done``, ``lds_done`` of them)."""
    true_loo, true_lds = np.array([r[0] for r in loo]), np.array([r[0] for r in lds])
    out = {**row, "loo_done": len(loo), "lds_done": len(lds), "retrain_converged": int(sum(r[1] for r in loo + lds)),
           "retrain_max_grad_norm": max((r[2] for r in loo + lds), default=None),
           "retrain_mean_seconds": {"loo": float(np.mean([r[3] for r in loo])) if loo else None,
                                    "lds": float(np.mean([r[3] for r in lds])) if lds else None},
           "retrain_seconds": time.perf_counter() - start, "loo": {}, "lds": {},
           "true_loo": true_loo.tolist(), "true_lds": true_lds.tolist(), "chosen": chosen.tolist(),
           "halves": [h.tolist() for h in halves[:len(lds)]], "retrainings": {"loo": loo, "lds": lds},
           "tau": {name: t.tolist() for name, t in tau.items()}}  # to score other methods on the same retrainings
    for name, t in tau.items():
        if len(loo) > 2:
            out["loo"][name] = float(np.corrcoef(t[chosen[:len(loo)]], true_loo)[0, 1])
        if len(lds) > 2:
            out["lds"][name] = float(spearmanr([t[h].sum() for h in halves[:len(lds)]], true_lds).statistic)
    return out


def draw_removals(seed: int, n_train: int, removals: int, subsets: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The seed's leave-one-out positions (removals,) and random half-subsets (subsets x n_train // 2)."""
    rng = np.random.default_rng(seed + 7)
    chosen = np.sort(rng.choice(n_train, size=removals, replace=False))
    return chosen, [np.sort(rng.choice(n_train, size=n_train // 2, replace=False)) for _ in range(subsets)]


def start_check(seed: int, n_train: int, scale: float = 0.5) -> dict:
    """The memorising model's first half-subset retrained from theta_hat, from the anchor (the LoRA
    initialisation) and from theta_hat + scale x |theta_hat - anchor| x a random unit vector: per start the
    objective, |grad R|, the change of L', the smallest Hessian eigenvalue there; the largest parameter
    distance between the optima."""
    split = setup.make_split(seed, n_train)
    problem = setup.make_problem(split, "memorising", seed)
    theta, _, _, lower = setup.train_fit(problem, tol=RETRAIN_TOL)
    preconditioner, loss = RetrainPreconditioner(lower, problem.delta), setup.ref_loss(split, problem, seed)
    drop = draw_removals(seed, n_train, 1, 1)[1][0]
    sub = problem.with_batches(problem.batches.without(drop.tolist()))
    noise = torch.randn(problem.n_params, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    starts = {"theta_hat": theta, "anchor": problem.anchor,
              "perturbed": theta + scale * float((theta - problem.anchor).norm()) * noise / noise.norm()}
    out, optima = {"seed": seed, "subset": drop.tolist(), "scale": scale, "starts": {}}, {}
    for name, start in starts.items():
        fit, info = retrain_to_tolerance(sub, start, RETRAIN_TOL_MEMORISING, preconditioner(0.25))
        optima[name] = fit.theta
        out["starts"][name] = {"objective": fit.objective, "grad_norm": fit.grad_norm, "converged": fit.converged,
                               "loss_change": float(loss(fit.theta) - loss(theta)), "seconds": fit.seconds, **info,
                               "hessian_min_eigenvalue": float(torch.linalg.eigvalsh(dense_hessian(sub, fit.theta))[0])}
        print(name, out["starts"][name], file=sys.stderr)
    out["max_parameter_distance"] = max(float((a - b).norm()) for a in optima.values() for b in optima.values())
    return out


def resumed(partial: Path | None, kind: str) -> tuple[list, list]:
    """The retrainings (change, converged, |grad R|, seconds) that a partial file of model ``kind`` holds,
    leave-one-out and half-subsets ([], [] without one): a stopped run goes on where it stopped."""
    if partial is None or not partial.exists() or json.loads(partial.read_text())["model"] != kind:
        return [], []
    done = json.loads(partial.read_text())["retrainings"]
    return [tuple(r) for r in done["loo"]], [tuple(r) for r in done["lds"]]


def run_seed(seed: int, n_train: int, removals: int, subsets: int, models: list[str],
             partial: Path | None = None, resume: bool = False) -> list[dict]:
    split = setup.make_split(seed, n_train)
    rows = []
    for kind in models:
        problem = setup.make_problem(split, kind, seed)
        theta, checkpoints, info, lower = setup.train_fit(problem, tol=RETRAIN_TOL)
        preconditioner = None if lower is None else RetrainPreconditioner(lower, problem.delta)
        loss = setup.ref_loss(split, problem, seed)
        tau, seconds = method_scores(split, problem, theta, checkpoints, loss, seed, lower)
        start = time.perf_counter()
        chosen, halves = draw_removals(seed, n_train, removals, subsets)
        row = {"seed": seed, "model": kind, "n_train": n_train, "removals": removals, "subsets": subsets, **info,
               "clip_score_auroc": setup.cosine_auroc(problem, theta, split.bad), **setup.training_fit(split, problem, theta),
               "method_seconds": seconds, "ref_loss_grad_norm": float(loss_gradient(loss, theta).norm())}
        loo, lds = resumed(partial if resume else None, kind)
        skip = {id(loo): len(loo), id(lds): len(lds)}  # the first ones of each kind in the order below are done
        jobs = [(loo, np.array([n])) for n in chosen] + [(lds, h) for h in halves]
        order = np.argsort([i / removals for i in range(removals)] + [i / subsets for i in range(subsets)], kind="stable")
        for target, drop in (jobs[i] for i in order):  # interleaved: a partial file holds both kinds
            if skip[id(target)] > 0:
                skip[id(target)] -= 1
                continue
            target.append(retrained_change(problem, theta, loss, drop, preconditioner))
            if partial is not None:
                partial.write_text(json.dumps(summarise(row, tau, chosen, halves, loo, lds, start), indent=2))
        row = summarise(row, tau, chosen, halves, loo, lds, start)
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("seed", "model", "loo", "lds", "retrain_converged", "retrain_max_grad_norm")}),
              file=sys.stderr)
    return rows


def merge() -> None:
    """The per-seed JSONs (unfinished runs as far as they got), the start checks and the bars, in one file."""
    rows = []
    for path in sorted(setup.RESULTS.glob("ecif_fidelity_seed*.json")):
        if path.name.endswith(".partial.json"):
            if not path.with_name(path.name.replace(".partial", "")).exists():  # an unfinished run: as far as it got
                rows.append({**json.loads(path.read_text()), "partial": True})
        else:
            rows.extend(json.loads(path.read_text())["rows"])
    settings = {"krylov_dim": KRYLOV_DIM, "proj_dim": PROJ_DIM, "gn_damping": GN_DAMPING, "logra_damping": LOGRA_DAMPING,
                "retrain_tol": RETRAIN_TOL, "retrain_tol_memorising": RETRAIN_TOL_MEMORISING, "peers_proj_dim": peers.PROJ_DIM,
                "ecif_exact_hessian": "a diagnostic beside the chosen ECIF (since session 16 the Krylov-projected exact "
                                      "Hessian, k krylov_dim; before: projected Gauss-Newton, ecif_gauss_newton_k512); "
                                      "the bar uses ecif"}
    for r in rows:
        done = r.get("loo_done", r["removals"]) + r.get("lds_done", r["subsets"])
        r["truth"] = "converged" if r["retrain_converged"] == done else "not every retraining reached the tolerance"
    evaluation = [r for r in rows if r["seed"] in (0, 1, 2) and not r.get("partial")]
    peer_names = ("tracin", "trak", "logra", "ecif_positive")
    bar = {"loo_ecif_convex_ge_0.99": {r["seed"]: r["loo"]["ecif"] >= 0.99 for r in evaluation if r["model"] == "convex"},
           "lds_ecif_ge_every_peer_converged_truth": {
               r["seed"]: all(r["lds"]["ecif"] >= r["lds"][m] for m in peer_names)
               for r in evaluation if r["model"] == "memorising" and r["truth"] == "converged"}}
    checks = [json.loads(p.read_text()) for p in sorted(setup.RESULTS.glob("ecif_fidelity_start_check_seed*.json"))]
    (setup.RESULTS / "ecif_fidelity.json").write_text(json.dumps({"settings": settings, "bars": bar, "start_check": checks,
                                                                  "rows": rows}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="100")
    parser.add_argument("--n-train", type=int, default=128)
    parser.add_argument("--removals", type=int, default=64)
    parser.add_argument("--subsets", type=int, default=50)
    parser.add_argument("--models", default="convex,memorising")
    parser.add_argument("--merge", action="store_true")
    parser.add_argument("--start-check", type=int, help="a development seed: retrain one half-subset from 3 starts")
    parser.add_argument("--tag", default="")
    parser.add_argument("--resume", action="store_true", help="go on from the seed's partial file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.merge:
        merge()
        return
    if args.start_check is not None:
        result = start_check(args.start_check, args.n_train)
        (setup.RESULTS / f"ecif_fidelity_start_check_seed{args.start_check}.json").write_text(json.dumps(result, indent=2))
        return
    for seed in (int(s) for s in args.seeds.split(",")):
        path = setup.RESULTS / f"ecif_fidelity_seed{seed}{args.tag}.json"
        rows = run_seed(seed, args.n_train, args.removals, args.subsets, args.models.split(","),
                        path.with_suffix(".partial.json"), args.resume)
        path.write_text(json.dumps({"rows": rows}, indent=2))


if __name__ == "__main__":
    main()
