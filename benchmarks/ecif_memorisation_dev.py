"""Development-seed grid for the memorising model (issue 16): which L2-SP delta learns, memorises and reaches
a tight optimum that warm-started retraining can reach again. Development seeds only (100-103); never the
evaluation seeds 0-2.

Per (seed, delta): ``ecif_setup.train_fit`` (Adam, L-BFGS, dense-Hessian preconditioned rounds), then
grad norm, the Hessian's extreme eigenvalues at theta_hat, clean training fit, shuffled captions memorised,
zero-shot test accuracy, the model's own cosine AUROC on the shuffled pairs, and a retraining probe: two
single removals and two half-subsets retrained exactly as ``ecif_fidelity`` does (converged or not, seconds).
Run: python benchmarks/ecif_memorisation_dev.py --seeds 101 --deltas 100,200 (rows appended to
benchmarks/results/ecif_memorisation_dev.json).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import ecif_fidelity as fidelity  # noqa: E402
import ecif_setup as setup  # noqa: E402

OUT = setup.RESULTS / "ecif_memorisation_dev.json"


def run(seed: int, delta: float, n_train: int) -> dict:
    if seed in (0, 1, 2):
        raise ValueError("evaluation seeds are not for development")
    setup.MEMO_DELTA = delta
    split = setup.make_split(seed, n_train)
    problem = setup.make_problem(split, "memorising", seed)
    theta, _, info, lower = setup.train_fit(problem, tol=fidelity.RETRAIN_TOL)
    eigenvalues = torch.linalg.eigvalsh(lower @ lower.T)
    row = {"seed": seed, "delta": delta, "n_train": n_train, "softplus_beta": setup.SOFTPLUS_BETA, **info,
           "hessian_min_eigenvalue": float(eigenvalues[0]), "hessian_max_eigenvalue": float(eigenvalues[-1]),
           "clip_score_auroc": setup.cosine_auroc(problem, theta, split.bad), **setup.training_fit(split, problem, theta)}
    loss = setup.ref_loss(split, problem, seed)
    preconditioner = fidelity.RetrainPreconditioner(lower, problem.delta)
    rng = np.random.default_rng(seed + 7)
    probes = [np.array([int(n)]) for n in rng.choice(n_train, 2, replace=False)]
    probes += [np.sort(rng.choice(n_train, n_train // 2, replace=False)) for _ in range(2)]
    row["retrain_probe"] = []
    for drop in probes:
        start = time.perf_counter()
        change, converged = fidelity.retrained_change(problem, theta, loss, drop, preconditioner)
        row["retrain_probe"].append({"removed": len(drop), "converged": converged, "change": change,
                                     "seconds": time.perf_counter() - start})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="101")
    parser.add_argument("--deltas", default="100")
    parser.add_argument("--n-train", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = json.loads(OUT.read_text())["rows"] if OUT.exists() else []
    for seed in (int(s) for s in args.seeds.split(",")):
        for delta in (float(d) for d in args.deltas.split(",")):
            rows.append(run(seed, delta, args.n_train))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            OUT.write_text(json.dumps({"note": __doc__.split("\n")[0], "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
