"""Near-duplicates at scale: time and peak memory per stage, growth exponent, candidate recall (issue 14 item 2).

Two parts, each N in its own subprocess (peak RSS = ru_maxrss of that process):
  * images (N = 10k, 20k by default): synthetic 32 x 32 colour images (smooth random fields: low-frequency
    Gaussian noise upsampled, so no two are alike) with 2% planted copies (shift 1-3 px cut from a larger
    field, JPEG quality 30-90, brightness/contrast), through the whole indexed path: the streaming pass
    (ViewIndex.add, batches of 1,024), candidates (faiss HNSW, CANDIDATE_K), the view check on candidates.
    Candidate recall: planted pairs among the HNSW candidates, and among the exact (blockwise, all-pairs) kNN
    of the same codes, i.e. the index stage against the exhaustive search.
  * codes (N = 10k, 100k, 1M by default): the candidate stage alone on synthetic codes (N x 3 x 64 unit
    vectors; 2% planted copies = a code plus Gaussian noise of 0.1 per dim, renormalised), which is what
    the index holds per image; the stream's RAM is these codes (384 B per image). The image check's cost per
    candidate pair is measured in the images part; at 1M it is projected (seconds per pair x pairs), not run,
    because computing the views of a million images (~6 ms per image on this CPU) alone takes ~1.7 h.
Growth exponent: slope of log(time) on log(N) per stage.

Output: benchmarks/results/findings_scale.json. Run: python benchmarks/findings_scale.py [--images 10000,20000]
[--codes 10000,100000,1000000] [--threads 2]
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "findings_scale.json"
PLANTED = 0.02


def synthetic_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N x 3 x 32 x 32 float32 in [0, 1], copy rows, their original rows)."""
    import torch
    import torch.nn.functional as F
    from PIL import Image
    rng = np.random.default_rng(seed)
    fields = torch.from_numpy(rng.normal(size=(n, 3, 10, 10)).astype(np.float32))
    big = F.interpolate(fields, size=(38, 38), mode="bicubic", align_corners=False)
    big = (big - big.amin(dim=(1, 2, 3), keepdim=True)) / (big.amax(dim=(1, 2, 3), keepdim=True)
                                                          - big.amin(dim=(1, 2, 3), keepdim=True))
    images = big[:, :, 3:35, 3:35].numpy().copy()
    n_copy = int(PLANTED * n)
    copies = rng.choice(n, n_copy, replace=False)
    originals = rng.choice(np.setdiff1d(np.arange(n), copies), n_copy, replace=False)
    for c, o in zip(copies, originals):
        kind = c % 3
        if kind == 0:
            dy, dx = rng.integers(-3, 4, size=2)
            images[c] = big[o, :, 3 + dy:35 + dy, 3 + dx:35 + dx].numpy()
        elif kind == 1:
            buf = io.BytesIO()
            Image.fromarray((images[o].transpose(1, 2, 0) * 255).astype(np.uint8)).save(
                buf, format="JPEG", quality=int(rng.integers(30, 91)))
            images[c] = np.asarray(Image.open(buf), dtype=np.float32).transpose(2, 0, 1) / 255
        else:
            images[c] = np.clip(images[o] * rng.uniform(0.8, 1.2) + rng.uniform(-0.1, 0.1), 0, 1)
    return images, copies, originals


def planted_recall(ci: np.ndarray, cj: np.ndarray, copies: np.ndarray, originals: np.ndarray, n: int) -> float:
    found = set((ci * n + cj).tolist())
    return float(np.mean([min(a, b) * n + max(a, b) in found for a, b in zip(copies, originals)]))


def images_run(n: int) -> dict:
    from influencegate.findings.duplicate_index import ViewIndex, code_candidates
    images, copies, originals = synthetic_images(n, seed=n)
    out: dict = {"n": n}
    t = time.perf_counter()
    idx = ViewIndex()
    for s in range(0, n, 1024):
        idx.add(images[s:s + 1024])
    out["stream_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ci, cj = idx.candidates()
    out["candidates_s"], out["candidates"] = time.perf_counter() - t, int(len(ci))
    out["candidate_recall_planted_hnsw"] = planted_recall(ci, cj, copies, originals, n)
    t = time.perf_counter()
    ei, ej = code_candidates(idx.codes(), index="exact")
    out["exact_knn_s"] = time.perf_counter() - t
    out["candidate_recall_planted_exact_knn"] = planted_recall(ei, ej, copies, originals, n)
    exact = set((ei * n + ej).tolist())
    out["hnsw_recall_of_exact_knn_pairs"] = float(len(exact & set((ci * n + cj).tolist())) / max(len(exact), 1))
    t = time.perf_counter()
    i, j, _, checked = idx.pairs()
    out["check_s"] = time.perf_counter() - t - out["candidates_s"]
    out["check_s_per_pair"] = out["check_s"] / max(checked, 1)
    out["linked_pairs"] = int(len(i))
    out["linked_recall_planted"] = planted_recall(i, j, copies, originals, n)
    idx.close()
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def codes_run(n: int) -> dict:
    from influencegate.findings.duplicate_index import code_candidates
    rng = np.random.default_rng(n)
    out: dict = {"n": n}
    t = time.perf_counter()
    chunks = []
    for s in range(0, n, 100_000):  # the stream: each batch's codes appended as float16
        c = rng.normal(size=(min(100_000, n - s), 3, 64)).astype(np.float32)
        chunks.append((c / np.linalg.norm(c, axis=-1, keepdims=True)).astype(np.float16))
    codes = np.concatenate(chunks).astype(np.float32)
    del chunks
    n_copy = int(PLANTED * n)
    copies = rng.choice(n, n_copy, replace=False)
    originals = rng.choice(np.setdiff1d(np.arange(n), copies), n_copy, replace=False)
    noisy = codes[originals] + rng.normal(scale=0.1, size=(n_copy, 3, 64)).astype(np.float32)
    codes[copies] = noisy / np.linalg.norm(noisy, axis=-1, keepdims=True)
    out["stream_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ci, cj = code_candidates(codes)
    out["candidates_s"], out["candidates"] = time.perf_counter() - t, int(len(ci))
    out["candidate_recall_planted_hnsw"] = planted_recall(ci, cj, copies, originals, n)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def slope(ns: list[int], ts: list[float]) -> float | None:
    return float(np.polyfit(np.log(ns), np.log(ts), 1)[0]) if len(ns) >= 2 else None


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", default="10000,20000")
    p.add_argument("--codes", default="10000,100000,1000000")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # (part, n): run in this process, print JSON
    args = p.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    try:
        import faiss
        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        pass
    if args.one:
        part, n = args.one
        print(json.dumps(images_run(int(n)) if part == "images" else codes_run(int(n))))
        return
    result: dict = {"machine": {"cpus": 2, "threads": args.threads, "python": platform.python_version()},
                    "images": [], "codes": []}
    for part in ("images", "codes"):
        for n in [int(x) for x in getattr(args, part).split(",") if x]:
            proc = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--one", part, str(n)],
                                  capture_output=True, text=True)
            if proc.returncode:
                result[part].append({"n": n, "error": proc.stderr[-2000:]})
                continue
            result[part].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(part, result[part][-1], file=sys.stderr, flush=True)
            RESULTS.write_text(json.dumps(result, indent=1))
    for part, stages in (("images", ("stream_s", "candidates_s", "check_s")), ("codes", ("stream_s", "candidates_s"))):
        ok = [r for r in result[part] if "error" not in r]
        result[f"{part}_growth_exponent"] = {s: slope([r["n"] for r in ok], [r[s] for r in ok]) for s in stages}
    ok_img = [r for r in result["images"] if "error" not in r]
    if ok_img and result["codes"]:
        per_pair = ok_img[-1]["check_s_per_pair"]
        per_image = ok_img[-1]["stream_s"] / ok_img[-1]["n"]
        result["projection_1m_images"] = {
            "stream_s": per_image * 1e6, "check_s": per_pair * ok_img[-1]["candidates"] / ok_img[-1]["n"] * 1e6,
            "note": "linear extrapolation from the largest images run (both stages are linear in N)"}
    RESULTS.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
