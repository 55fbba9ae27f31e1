"""Which curvature in the projected space brings ECIF closest to the exact-Hessian ECIF on the memorising model
(issue 16, "what it must show" item 1, session 16).

Per seed, the memorising LoRA model of ``ecif_setup`` is trained as in ``ecif_fidelity`` (same split, batches
and theta_hat) and its exact pieces cached (``CACHE``): the per-pair gradients grad Pos_n, grad Neg_n (N x P),
grad L' (P,), the dense Hessian H of R at theta_hat and the full Gauss-Newton matrix GN (+ delta I), P x P.
Every candidate is then tau = G Phi^T (Phi M Phi^T + lambda I)^-1 Phi grad L' (G = grad Pos + grad Neg) for a
projection Phi (k x P) and a matrix M, lambda = damping x tr(Phi M Phi^T) / k:
- gn: M = GN, Phi random (``projected.random_projection``, seeded by the seed): the session-12 choice at
  k 512, damping 1e-3;
- hessian: M = H, Phi random (``project_pairs(..., "hessian")``: k Hessian-vector products);
- krylov: M = H, Phi = the orthonormal Krylov basis of (H, grad L') (``projected.krylov_projection``: k
  Hessian-vector products; k conjugate-gradient steps in the full space, exact at k = P);
- exact: H^-1 (the diagonal reference).
``--dev`` (seeds 101, 102: development only) scores every candidate by its Pearson correlation with the exact
ECIF over the pairs and by the Spearman correlation of the half-subset sums (the LDS's predictor) with the
exact one's, and when a truth file exists for the seed (``ecif_fidelity_seed{S}_memorising.json``) by LOO and
LDS against it. ``--evaluate`` (eval seeds 0, 1, 2, once, after the choice) adds the chosen and the old ECIF,
the exact diagnostic and the stored peers to each seed's truth (no retraining) and writes
benchmarks/results/ecif_curvature.json.
Run: python benchmarks/ecif_curvature.py --dev 101,102 | --evaluate 0,1,2 [--truth 2=path] [--write "101,102;0,1,2"]
(session 16: seed 2's truth was the earlier one, 67 of 114 retrainings converged, with today's taus: --truth).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).parent))
import ecif_fidelity as fidelity  # noqa: E402
import ecif_setup as setup  # noqa: E402

from influencegate.ecif import loss_gradient, pair_gradients  # noqa: E402
from influencegate.ecif.projected import krylov_projection, project_pairs, random_projection  # noqa: E402

CACHE = Path("/tmp/s16-ecif/cache")
KS = (16, 32, 64, 128, 256, 512, 1024)
DAMPINGS = (0.0, 1e-4, 1e-3, 1e-2)


def seed_state(seed: int, n_train: int = 128, gauss_newton: bool = True) -> dict[str, torch.Tensor]:
    """The seed's exact pieces (module doc), cached: g, g_pos (N x P), grad_ref (P,), hessian (P x P), gn (P x P,
    when gauss_newton) and library_positive (N,): the chosen ECIF's positive part through the library's path (``krylov_projection``,
    ``project_pairs(..., "hessian")``, ``ProjectedEcif``) on the model itself."""
    path = CACHE / f"seed{seed}_n{n_train}.pt"
    if path.exists():
        return torch.load(path)
    split = setup.make_split(seed, n_train)
    problem = setup.make_problem(split, "memorising", seed)
    theta, _, _, lower = setup.train_fit(problem, tol=fidelity.RETRAIN_TOL)
    grad_ref = loss_gradient(setup.ref_loss(split, problem, seed), theta)
    state = {"grad_ref": grad_ref, "hessian": lower @ lower.T, "library_positive": fidelity.chosen_ecif(problem, theta, grad_ref)[0]}
    if gauss_newton:
        full = project_pairs(problem, theta, torch.eye(problem.n_params, dtype=torch.float64), "gauss_newton")
        state.update(g=full.g_pos + full.g_neg, g_pos=full.g_pos, gn=full.curvature)
    else:
        g_pos, g_neg = pair_gradients(problem, theta)
        state.update(g=g_pos + g_neg, g_pos=g_pos)
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def projected_tau(state: dict, phi: torch.Tensor, matrix: torch.Tensor, damping: float) -> np.ndarray | None:
    """G Phi^T (Phi M Phi^T + lambda I)^-1 Phi grad L' (N,); None when the damped matrix is not positive definite."""
    curvature = phi @ matrix @ phi.T
    curvature = 0.5 * (curvature + curvature.T)
    curvature = curvature + damping * float(curvature.trace()) / len(curvature) * torch.eye(len(curvature), dtype=torch.float64)
    factor, info = torch.linalg.cholesky_ex(curvature)
    if int(info) != 0:
        return None
    s = torch.cholesky_solve((phi @ state["grad_ref"])[:, None], factor)[:, 0]
    return (state["g"] @ phi.T @ s).numpy()


def candidates(state: dict, seed: int, ks=KS, dampings=DAMPINGS) -> dict[str, np.ndarray]:
    """tau (N,) of every candidate (module doc), keyed 'kind_k{k}_d{damping}' and 'exact'."""
    n_params = len(state["grad_ref"])
    out = {"exact": (state["g"] @ torch.linalg.solve(state["hessian"], state["grad_ref"])).numpy()}
    hvp = lambda v: state["hessian"] @ v  # noqa: E731
    for k in [*ks, n_params]:
        random = random_projection(n_params, min(k, n_params), seed)
        krylov = krylov_projection(hvp, state["grad_ref"], min(k, n_params))
        for damping in dampings:
            for kind, phi, matrix in (("gn", random, state["gn"]), ("hessian", random, state["hessian"]),
                                      ("krylov", krylov, state["hessian"])):
                tau = projected_tau(state, phi, matrix, damping)
                if tau is not None:
                    out[f"{kind}_k{len(phi)}_d{damping:g}"] = tau
    return out


def scores(tau: dict[str, np.ndarray], exact: np.ndarray, halves: list[np.ndarray], truth: dict | None) -> dict:
    """Per candidate: Pearson with the exact ECIF, Spearman of its half-subset sums with the exact one's, and LOO
    / LDS against the truth when there is one."""
    out = {}
    exact_sums = [exact[h].sum() for h in halves]
    for name, t in tau.items():
        row = {"pearson_exact": float(np.corrcoef(t, exact)[0, 1]),
               "spearman_exact_halves": float(spearmanr([t[h].sum() for h in halves], exact_sums).statistic)}
        if truth is not None:
            chosen, true_halves = np.array(truth["chosen"]), truth["halves"]
            row["loo"] = float(np.corrcoef(t[chosen[:len(truth["true_loo"])]], truth["true_loo"])[0, 1])
            row["lds"] = float(spearmanr([t[h].sum() for h in true_halves], truth["true_lds"]).statistic)
        out[name] = row
    return out


def stored_truth(seed: int, path: str | None = None) -> dict | None:
    """The seed's stored retraining truth (true_loo, true_lds, chosen, halves, tau of the run's methods) from
    ``path`` or the seed's ecif_fidelity_seed{S}_memorising.json, if any."""
    path = Path(path) if path else setup.RESULTS / f"ecif_fidelity_seed{seed}_memorising.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    row = data["rows"][0] if "rows" in data else data
    if "halves" not in row:  # runs before session 16 did not store them: the same draw again
        _, halves = fidelity.draw_removals(seed, row["n_train"], row["removals"], row["subsets"])
        row["halves"] = [h.tolist() for h in halves[:len(row["true_lds"])]]
    return row


PEERS = ("tracin", "trak", "logra", "ecif_positive")


def evaluate(seed: int, truth: dict) -> dict:
    """One evaluation seed, once: LOO / LDS of the chosen ECIF (its positive part too), of the old one (projected
    Gauss-Newton, k 512), of the exact diagnostic and of the stored peers, on the seed's stored truth; whether
    the chosen ECIF's LDS >= every peer's (ecif_positive: the chosen curvature's positive part; the old one's
    is reported beside it)."""
    state = seed_state(seed, truth["n_train"], gauss_newton=False)
    krylov = krylov_projection(lambda v: state["hessian"] @ v, state["grad_ref"], fidelity.KRYLOV_DIM)
    s = krylov.T @ torch.linalg.solve(krylov @ state["hessian"] @ krylov.T, krylov @ state["grad_ref"])
    exact = (state["g"] @ torch.linalg.solve(state["hessian"], state["grad_ref"])).numpy()
    stored = {name: np.array(t) for name, t in truth["tau"].items()}
    tau = {"ecif": (state["g"] @ s).numpy(), "ecif_positive": (state["g_pos"] @ s).numpy(),
           "ecif_gauss_newton_k512": stored.get("ecif_gauss_newton_k512", stored["ecif"]),  # runs before session 16:
           "ecif_positive_gauss_newton_k512": stored.get("ecif_positive_gauss_newton_k512", stored["ecif_positive"]),  # "ecif"
           "ecif_exact_hessian": exact, **{name: stored[name] for name in ("tracin", "trak", "logra")}}
    fit = scores(tau, exact, [np.array(h) for h in truth["halves"]], truth)
    return {"seed": seed, "loo_done": len(truth["true_loo"]), "lds_done": len(truth["true_lds"]),
            "truth": truth.get("truth_note", "converged"),
            "checks": {"library_vs_dense_positive_max_abs": float(np.abs(state["library_positive"].numpy() - tau["ecif_positive"]).max()),
                      "positive_max_abs": float(np.abs(tau["ecif_positive"]).max()),
                       "stored_exact_pearson": float(np.corrcoef(stored["ecif_exact_hessian"], exact)[0, 1])
                       if "ecif_exact_hessian" in stored else None},
           "loo": {k: v["loo"] for k, v in fit.items()}, "lds": {k: v["lds"] for k, v in fit.items()},
           "pearson_exact": {k: v["pearson_exact"] for k, v in fit.items()},
           "ecif_lds_ge_every_peer": all(fit["ecif"]["lds"] >= fit[p]["lds"] for p in PEERS),
           "ecif_lds_ge_every_peer_old_positive_part": all(
               fit["ecif"]["lds"] >= fit[p]["lds"] for p in ("tracin", "trak", "logra", "ecif_positive_gauss_newton_k512")),
           "exact_lds_ge_trak": fit["ecif_exact_hessian"]["lds"] >= fit["trak"]["lds"],
           "tau": {k: v.tolist() for k, v in tau.items()}}


def write_results(dev_seeds: list[int], eval_seeds: list[int]) -> None:
    """benchmarks/results/ecif_curvature.json (the development scores, the choice, the evaluation rows) and the
    evaluation seeds' ecif_fidelity_seed{S}_memorising.json re-scored with the chosen ECIF (taus, loo, lds)."""
    dev = {s: json.loads((CACHE / f"dev_seed{s}.json").read_text())["scores"] for s in dev_seeds}
    rows = [json.loads((CACHE / f"eval_seed{s}.json").read_text()) for s in eval_seeds]
    choice = {"kind": "krylov", "k": fidelity.KRYLOV_DIM, "damping": 0.0,
              "rule": "the smallest k of the grid whose undamped Krylov ECIF has Pearson >= 0.999 with the exact "
                      "ECIF and Spearman >= 0.999 of the half-subset sums with the exact one's on both dev seeds"}
    (setup.RESULTS / "ecif_curvature.json").write_text(json.dumps(
        {"choice": choice, "dev": dev, "evaluation": [{k: v for k, v in r.items() if k != "tau"} for r in rows]}, indent=1))
    for r in rows:
        path = setup.RESULTS / f"ecif_fidelity_seed{r['seed']}_memorising.json"
        data = json.loads(path.read_text())
        row = data["rows"][0]
        row.update(tau=r["tau"], loo=r["loo"], lds=r["lds"], ecif="krylov k 128, exact Hessian, undamped (session 16)",
                   truth_note=r["truth"])
        path.write_text(json.dumps(data, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dev", help="development seeds, e.g. 101,102")
    parser.add_argument("--evaluate", help="evaluation seeds, once, after the choice")
    parser.add_argument("--truth", default="", help="seed=path of a truth file other than the seed's own")
    parser.add_argument("--write", help="dev seeds;eval seeds whose cached results go to benchmarks/results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for seed in (int(s) for s in (args.dev or "").split(",") if s):
        state = seed_state(seed)
        tau = candidates(state, seed)
        truth = stored_truth(seed)
        _, halves = fidelity.draw_removals(seed, len(state["g"]), 64, 50)
        result = {"seed": seed, "truth": truth is not None, "scores": scores(tau, tau["exact"], halves, truth)}
        (CACHE / f"dev_seed{seed}.json").write_text(json.dumps(result, indent=1))
        for name, row in result["scores"].items():
            print(seed, name, {k: round(v, 3) for k, v in row.items()})
    paths = dict(item.split("=") for item in args.truth.split(",") if item)
    for seed in (int(s) for s in (args.evaluate or "").split(",") if s):
        row = evaluate(seed, stored_truth(seed, paths.get(str(seed))))
        (CACHE / f"eval_seed{seed}.json").write_text(json.dumps(row, indent=1))
        print(json.dumps({k: v for k, v in row.items() if k != "tau"}), file=sys.stderr)
    if args.write:
        dev, evaluation = (list(map(int, part.split(","))) for part in args.write.split(";"))
        write_results(dev, evaluation)


if __name__ == "__main__":
    main()
