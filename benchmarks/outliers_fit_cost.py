"""What the joint outlier score's robust covariance adds to the outliers stage at scale (issue 14, session 13).

Only the combination changed (outliers.joint_score: the robust z-scores of 10 coordinates, their Mahalanobis
distance, the robust z of its log); the image statistics and the k-NN distances are computed as before, so this
times joint_score alone on N synthetic coordinates (10 columns: Gaussian rows with a correlated pair, 12.5% of
the rows shifted by 6 on three columns), outliers.COVARIANCE_FITS "classical" against "robust" (the
Outliers option covariance), one thread, REPEATS times each (min and median wall time), plus the peak of
the memory numpy allocates during one call (tracemalloc). The whole stage at the same N:
`findings_scale.py --outliers N`.

Run: python benchmarks/outliers_fit_cost.py [--n 100000,1000000] [--out FILE]
Output: benchmarks/results/outliers_fit_cost.json
"""
from __future__ import annotations

import argparse
import json
import os
import time
import tracemalloc
from pathlib import Path

import numpy as np

from influencegate.findings.outliers import COVARIANCE_FITS, joint_score

RESULTS = Path(__file__).resolve().parent / "results" / "outliers_fit_cost.json"
REPEATS = 3


def coordinates(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """10 named n-vectors (float64): Gaussian, c1 correlated with c0, the last 12.5% of rows shifted by 6 on
    c0, c3 and c7."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10))
    x[:, 1] = 0.8 * x[:, 0] + 0.6 * x[:, 1]
    x[n - n // 8:, [0, 3, 7]] += 6.0
    return {f"c{i}": x[:, i].copy() for i in range(10)}


def timed(coords: dict[str, np.ndarray], settings: tuple[float, float, int]) -> dict:
    """Min / median seconds over REPEATS calls of joint_score(coords, *settings), peak traced MB of one call,
    and the share of the shifted rows flagged above 3.5."""
    seconds = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        score = joint_score(coords, *settings)[1]
        seconds.append(time.perf_counter() - t)
    tracemalloc.start()
    joint_score(coords, *settings)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    n = len(score)
    return {"min_s": min(seconds), "median_s": float(np.median(seconds)), "peak_traced_mb": peak / 2 ** 20,
            "shifted_flagged": float((score[n - n // 8:] > 3.5).mean()),
            "others_flagged": float((score[:n - n // 8] > 3.5).mean())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", default="100000,1000000")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    rows = []
    for n in (int(v) for v in args.n.split(",")):
        coords = coordinates(n)
        rows.append({"n": n, **{name: timed(coords, fit) for name, fit in COVARIANCE_FITS.items()}})
        print(json.dumps(rows[-1]), flush=True)
    result = {"benchmark": "outliers_fit_cost", "fits": {name: dict(zip(("shrink", "support", "steps"), fit))
                                                             for name, fit in COVARIANCE_FITS.items()},
              "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
              "repeats": REPEATS, "runs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
