"""Near-duplicates and outliers at scale: time and peak memory per stage, growth exponent, candidate recall
(issue 14 item 2).

Parts, each N in its own subprocess (peak RSS = ru_maxrss of that process, imports included: ~0.7 GB; it
counts the mapped pages of the index's files too; VmRSS/RssAnon/RssFile after each stage from /proc):
  * images (N = 10k, 100k, 1M by default): synthetic 32 x 32 colour images (smooth random fields, each from its
    own seed, generated a batch at a time: the data never sits in RAM at once) with 2% planted copies
    (shift 1-3 px cut from a larger field, JPEG quality 30-90, brightness/contrast), through the whole
    indexed path of the Duplicates finding: the streaming pass (duplicate_links.stream_index, as the finding
    runs it: ViewIndex.add, batches of 1,024: thumbnails, anchor views and their low-frequency bounds to disk,
    codes in RAM; the outliers' image statistics of the same batches, image_stats.StatisticsStream, timed
    inside it as stream_statistics_s; the exact check's content hashes, rows with stream_hashes only),
    candidates (available_index():
    faiss IVF, CANDIDATE_K), the check on candidates only (ViewIndex.similarity bounded at min(ViewMatch.propose,
    ViewMatch.nearest) as ViewIndex.pairs bounds it: the
    low-frequency bound of every candidate, the exact views for those the bound cannot rule out), the aligned
    check of the pairs the views propose (align.py, on the stored thumbnails) and the link rule
    (ViewIndex.decide, timed together as align_link_s; before the aligned check: link_s). Generating the
    synthetic images is timed apart (`generate_s`) and is in no stage. Then the outlier
    part on N synthetic D = 32 float32 embeddings (64 Gaussian clusters, 0.5% planted outliers in random
    directions, log_influence standard normal) and the statistics of the streaming pass:
    Outliers(index="faiss-ivf", combine="joint").find(statistics=...), as find_all runs it after the
    duplicates, timed; the earlier rule (combine="mean", embeddings only) timed beside it;
    the k-NN distance of 2,000 random rows against the exact search (faiss-flat) and the planted outliers'
    share of the top 5% of outlier_score.
  * exhaustive (N = 20,000 by default): the index path against the all-pairs view search (views.view_pairs)
    on the same images: the share of the exhaustive search's links among the candidates (IVF, HNSW and the
    exact kNN of the same codes) and among the index path's links; the all-pairs search's pairs proposed,
    aligned and most held at once, and its process's peak RSS before and after it (exhaustive_search). The
    all-pairs links are cached in results/exhaustive_links_<N>.npz (git-ignored; ~20 min at 20,000 here), so
    other indexes can be rescored.
  * outliers (none by default): the outlier part alone on N synthetic images and embeddings, the statistics
    read from the images a block at a time (the images regenerated per block, that time excluded).
Every stage's wall seconds (<stage>_s) has its CPU seconds beside it (<stage>_cpu_s: time.process_time of the
run's process, all threads), and each N the load average (1, 5, 15 min) at its start and end, so that a run
on the shared machine can still be read.
  * codes (none by default): the candidate stage alone on synthetic codes (N x 3 x 64 unit vectors;
    2% planted copies = a code plus Gaussian noise of 0.1 per dim, renormalised).
Growth exponent: slope of log(time) on log(N) per stage.

Output: benchmarks/results/findings_scale.json (earlier tables kept under "superseded").
Run: python benchmarks/findings_scale.py [--images 10000,100000,1000000] [--exhaustive 20000] [--codes ...]
[--outliers 10000,100000] [--threads 2] [--code-corners 0]
"""
from __future__ import annotations

import argparse
import collections
import io
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from influencegate.findings.image_stats import StatisticsStream

RESULTS = Path(__file__).resolve().parent / "results" / "findings_scale.json"
PLANTED = 0.02
#: ViewMatch.code_corners of the images part (None: ViewMatch's default; 0: no corner codes), --code-corners.
CODE_CORNERS: float | None = None
#: Largest N for the exact (blockwise, O(N^2)) kNN of the codes beside HNSW.
EXACT_KNN_MAX = 20_000


def _fields(rows: np.ndarray, seed: int) -> "torch.Tensor":
    """len(rows) x 3 x 38 x 38 smooth random colour fields in [0, 1], each drawn from its own seed (row)."""
    import torch
    import torch.nn.functional as F
    noise = np.stack([np.random.default_rng([seed, int(r)]).normal(size=(3, 10, 10)) for r in rows])
    big = F.interpolate(torch.from_numpy(noise.astype(np.float32)), size=(38, 38), mode="bicubic",
                        align_corners=False)
    lo, hi = big.amin(dim=(1, 2, 3), keepdim=True), big.amax(dim=(1, 2, 3), keepdim=True)
    return (big - lo) / (hi - lo)


def planting(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(copy rows, their original rows): PLANTED * n copies of distinct other rows."""
    rng = np.random.default_rng(seed)
    n_copy = int(PLANTED * n)
    copies = rng.choice(n, n_copy, replace=False)
    originals = rng.choice(np.setdiff1d(np.arange(n), copies), n_copy, replace=False)
    return copies, originals


def image_batch(start: int, stop: int, copies: np.ndarray, originals: np.ndarray, seed: int) -> np.ndarray:
    """Rows start:stop of the synthetic set, (stop - start) x 3 x 32 x 32 float32 in [0, 1]: 32 x 32 windows of
    smooth fields, the planted rows replaced by a copy of their original (shift 1-3 px cut from the larger
    field, JPEG quality 30-90, or brightness/contrast; by copy row mod 3). Generated a batch at a time: the
    data never sits in RAM at once."""
    from PIL import Image
    images = _fields(np.arange(start, stop), seed)[:, :, 3:35, 3:35].numpy().copy()
    here = (copies >= start) & (copies < stop)
    for c, o in zip(copies[here], originals[here]):
        rng = np.random.default_rng([seed, int(c), 1])
        big = _fields(np.array([o]), seed)[0]
        kind = c % 3
        if kind == 0:
            dy, dx = rng.integers(-3, 4, size=2)
            images[c - start] = big[:, 3 + dy:35 + dy, 3 + dx:35 + dx].numpy()
        elif kind == 1:
            buf = io.BytesIO()
            Image.fromarray((big[:, 3:35, 3:35].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)).save(
                buf, format="JPEG", quality=int(rng.integers(30, 91)))
            images[c - start] = np.asarray(Image.open(buf), dtype=np.float32).transpose(2, 0, 1) / 255
        else:
            images[c - start] = np.clip(big[:, 3:35, 3:35].numpy() * rng.uniform(0.8, 1.2)
                                        + rng.uniform(-0.1, 0.1), 0, 1)
    return images


def planted_recall(ci: np.ndarray, cj: np.ndarray, copies: np.ndarray, originals: np.ndarray, n: int) -> float:
    found = set((ci * n + cj).tolist())
    return float(np.mean([min(a, b) * n + max(a, b) in found for a, b in zip(copies, originals)]))


def memory() -> dict:
    """Peak RSS so far and the current resident memory (MB): VmRSS, RssAnon, RssFile (Linux /proc)."""
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[f"{key}_mb"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


class Clock:
    """Wall (perf_counter) and CPU (process_time: this process, all its threads) seconds per stage."""

    def __init__(self, out: dict) -> None:
        self.out = out
        self.start()

    def start(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self, stage: str, less_wall: float = 0.0, less_cpu: float = 0.0) -> None:
        """Record <stage>_s and <stage>_cpu_s since start(), minus what the stage did not own (generation)."""
        self.out[f"{stage}_s"] = time.perf_counter() - self.wall - less_wall
        self.out[f"{stage}_cpu_s"] = time.process_time() - self.cpu - less_cpu
        print(f"{stage}: {self.out[f'{stage}_s']:.1f} s wall, {self.out[f'{stage}_cpu_s']:.1f} s CPU, load "
              f"{os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)  # progress of a long run (main passes it on)
        self.start()


def images_run(n: int) -> dict:
    """The whole indexed path over n synthetic images, per stage: wall and CPU time (s), memory (MB), the load
    average (1, 5, 15 min) at start and end; then the outliers on the statistics of the streaming pass."""
    from influencegate.findings.code_candidates import available_index
    from influencegate.findings.duplicate_index import BOUND_MARGIN
    from influencegate.findings.duplicate_links import stream_index
    from influencegate.findings.view_search import nearest_of
    from influencegate.findings.views import ViewMatch

    copies, originals = planting(n, seed=n)
    out: dict = {"n": n, "index": available_index(), "memory": {}, "loadavg_start": os.getloadavg()}
    t_all = time.perf_counter()
    images = GeneratedImages(n, copies, originals, seed=n)
    statistics = TimedStatistics()
    clock = Clock(out)
    hashes: list[str] = []
    match = ViewMatch() if CODE_CORNERS is None else ViewMatch(code_corners=CODE_CORNERS)
    out["code_corners"] = match.code_corners
    idx = stream_index(images, match, statistics, hashes)  # the Duplicates finding's pass (index path)
    clock.stop("stream", images.generate_s, images.generate_cpu_s)
    out["stream_hashes"] = len(hashes)  # the exact check's content hashes, computed in the same pass
    out["generate_s"], out["generate_cpu_s"] = images.generate_s, images.generate_cpu_s
    out["stream_statistics_s"], out["stream_statistics_cpu_s"] = statistics.seconds, statistics.cpu_seconds
    out["memory"]["stream"] = memory()
    ci, cj = idx.candidates(index=out["index"])
    clock.stop("candidates")
    out["candidates"] = int(len(ci))
    out["memory"]["candidates"] = memory()
    out["candidate_recall_planted"] = planted_recall(ci, cj, copies, originals, n)
    clock.start()
    floor = min(idx.match.propose, idx.match.nearest)  # as ViewIndex.pairs: exact where proposed or nearest
    sims = idx.similarity(ci, cj, floor=floor)
    clock.stop("check")
    out["check_s_per_pair"] = out["check_s"] / max(len(ci), 1)
    out["check_exact_pairs"] = int((sims + BOUND_MARGIN >= floor).sum())
    out["memory"]["check"] = memory()
    clock.start()
    ok, aligned = idx.decide(ci, cj, sims)
    clock.stop("align_link")
    out["nearest_pairs"] = int(nearest_of(ci, cj, sims, idx.match).sum())  # aligned below propose (session 15)
    out["aligned_pairs"] = int((sims >= idx.match.propose).sum()) + out["nearest_pairs"]
    out["linked_pairs"] = int(ok.sum())
    out["linked_recall_planted"] = planted_recall(ci[ok], cj[ok], copies, originals, n)
    out["disk_mb"] = sum(os.path.getsize(f) for f in (idx.path, idx.anchor_path, idx.low_path)) / 2 ** 20
    idx.close()
    del ci, cj, sims, aligned, ok
    out["memory"]["link"] = memory()
    for unit in ("s", "cpu_s"):
        out[f"duplicates_{unit}"] = sum(out[f"{s}_{unit}"] for s in ("stream", "candidates", "check", "align_link"))
    out.update(outliers_part(n, statistics=statistics.table()))
    out["memory"]["outliers"] = memory()
    out["total_s"] = out["duplicates_s"] + out["outliers_s"]
    out["total_cpu_s"] = out["duplicates_cpu_s"] + out["outliers_cpu_s"]
    out["wall_s"] = time.perf_counter() - t_all  # generation of images and embeddings included
    out["peak_rss_mb"] = out["memory"]["outliers"]["peak_rss_mb"]
    out["loadavg_end"] = os.getloadavg()
    return out


class TimedStatistics(StatisticsStream):
    """The image statistics of the streaming pass, with the wall and CPU seconds of add() (part of stream_s)."""

    seconds = cpu_seconds = 0.0

    def add(self, block: np.ndarray) -> None:
        t, c = time.perf_counter(), time.process_time()
        super().add(block)
        self.seconds += time.perf_counter() - t
        self.cpu_seconds += time.process_time() - c


class GeneratedImages:
    """The synthetic set as an array-like M x 3 x 32 x 32 (image_batch on each slice asked for), as the audit's
    ImageArray reads a PixelStore: the time spent generating is kept in `generate_s` (it is in no stage)."""

    def __init__(self, n: int, copies: np.ndarray, originals: np.ndarray, seed: int) -> None:
        self.shape, self.generate_s, self.generate_cpu_s = (n, 3, 32, 32), 0.0, 0.0
        self.copies, self.originals, self.seed = copies, originals, seed

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        t, c = time.perf_counter(), time.process_time()
        start, stop, _ = rows.indices(self.shape[0])
        batch = image_batch(start, stop, self.copies, self.originals, self.seed)
        self.generate_s += time.perf_counter() - t
        self.generate_cpu_s += time.process_time() - c
        return batch


def outliers_part(n: int, d: int = 32, check_rows: int = 2000, images: GeneratedImages | None = None,
                  statistics: pd.DataFrame | None = None) -> dict:
    """Outliers(index="faiss-ivf", combine="joint") on n synthetic D = d embeddings (module docstring) and the
    image statistics, precomputed (`statistics`, by the duplicate index's streaming pass, as the findings run
    them) or read from `images` (streamed a block at a time; their generation excluded), timed apart from
    making them (wall outliers_s, CPU outliers_cpu_s); the earlier rule (combine="mean", embeddings only) timed beside it; k-NN distance of
    check_rows random rows against the exact search; planted outliers in the top 5%."""
    import faiss
    import pandas as pd
    from influencegate.findings.outliers import OUTLIER_K, Outliers
    t = time.perf_counter()
    rng = np.random.default_rng(n + 1)
    centres = rng.normal(size=(64, d)).astype(np.float32)
    emb = centres[rng.integers(0, 64, n)] + 0.5 * rng.normal(size=(n, d)).astype(np.float32)
    planted = rng.choice(n, max(1, n // 200), replace=False)
    emb[planted] = 3.0 * rng.normal(size=(len(planted), d)).astype(np.float32)
    table = pd.DataFrame({"sample_id": np.arange(n).astype(str), "log_influence": rng.normal(size=n)})
    out: dict = {"outliers_generate_s": time.perf_counter() - t}
    clock = Clock(out)
    finder = Outliers(index="faiss-ivf", combine="joint")
    found = finder.find(table, emb, images=images, statistics=statistics)
    clock.stop("outliers", *((images.generate_s, images.generate_cpu_s) if images is not None else ()))
    out["outliers_statistics"] = "streaming pass" if statistics is not None else "read from the images"
    out["outliers_rule"] = {k: v for k, v in finder.summary().items() if k in ("combine", "k", "k_large", "parts")}
    out["outliers_image_generate_s"] = images.generate_s if images is not None else None
    out["memory_after_outliers"] = memory()
    t = time.perf_counter()
    earlier = Outliers(index="faiss-ivf", combine="mean").find(table, emb)["outlier_score"].to_numpy()
    out["outliers_mean_rule_s"] = time.perf_counter() - t
    score = found["outlier_score"].to_numpy()
    for key, values in (("outliers_planted_in_top5pct", score), ("outliers_mean_rule_planted_in_top5pct", earlier)):
        out[key] = float((values >= np.quantile(values, 0.95))[planted].mean())
    out["outliers_flagged"] = int(found["is_outlier"].sum())
    rows = rng.choice(n, min(check_rows, n), replace=False)
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    flat = faiss.IndexFlatIP(d)
    flat.add(x)
    sims = flat.search(x[rows], OUTLIER_K + 1)[0][:, 1:]
    exact = (1.0 - sims).mean(axis=1)
    got = finder.components["knn_distance"].to_numpy()[rows]
    out["outliers_knn_distance_vs_exact"] = {
        "rows": int(len(rows)), "equal_share": float(np.mean(np.abs(got - exact) < 1e-5)),
        "mean_relative_excess": float(np.mean((got - exact) / np.maximum(exact, 1e-12))),
        "max_relative_excess": float(np.max((got - exact) / np.maximum(exact, 1e-12)))}
    return out


def exhaustive_run(n: int) -> dict:
    """The index path against the exhaustive all-pairs view search (views.view_pairs) on the same n images:
    the share of the exhaustive search's links that are candidates, and that the index path links."""
    import torch
    from influencegate.findings.code_candidates import CANDIDATE_INDEXES, available_index
    from influencegate.findings.duplicate_index import ViewIndex
    from influencegate.findings.view_search import view_pairs
    copies, originals = planting(n, seed=n)
    images = torch.from_numpy(image_batch(0, n, copies, originals, seed=n))
    cache = RESULTS.parent / f"exhaustive_links_{n}.npz"  # the all-pairs links, kept to rescore other indexes
    if cache.exists():
        saved = np.load(cache)
        ei, ej, seconds = saved["i"], saved["j"], float(saved["seconds"])
        counts = {k: int(saved[k]) for k in saved.files if k not in ("i", "j", "s", "seconds")}
    else:
        counts = {}
        before = memory()
        t = time.perf_counter()
        ei, ej, es = view_pairs(images, counts=counts)
        seconds = time.perf_counter() - t
        counts.update({"rss_before_mb": int(before["peak_rss_mb"]), "peak_rss_mb": int(memory()["peak_rss_mb"])})
        np.savez(cache, i=ei, j=ej, s=es, seconds=seconds, **counts)
    out: dict = {"n": n, "exhaustive_s": seconds, "exhaustive_links": int(len(ei)),
                 "exhaustive_search": counts}  # proposed, aligned, held_max pairs; peak RSS (MB) of the search
    exhaustive = set((ei * n + ej).tolist())

    def share(i: np.ndarray, j: np.ndarray) -> float:
        return float(len(exhaustive & set((i * n + j).tolist())) / max(len(exhaustive), 1))

    t = time.perf_counter()
    idx = ViewIndex()
    for s in range(0, n, 1024):
        idx.add(images[s:s + 1024])
    ii, ij, _, checked = idx.pairs(index=available_index())
    out["index"], out["index_s"] = available_index(), time.perf_counter() - t
    out["candidates"], out["index_links"] = int(checked), int(len(ii))
    for name in CANDIDATE_INDEXES:
        t = time.perf_counter()
        ci, cj = idx.candidates(index=name)
        out[f"candidates_{name}"] = {"pairs": int(len(ci)), "seconds": time.perf_counter() - t,
                                     "recall_of_exhaustive_links": share(ci, cj),
                                     "planted_recall": planted_recall(ci, cj, copies, originals, n)}
    idx.close()
    out["index_recall_of_exhaustive_links"] = share(ii, ij)
    out["index_links_not_exhaustive"] = int(len(set((ii * n + ij).tolist()) - exhaustive))
    out["planted_recall_exhaustive"] = planted_recall(ei, ej, copies, originals, n)
    out["planted_recall_index"] = planted_recall(ii, ij, copies, originals, n)
    return out


def codes_run(n: int) -> dict:
    from influencegate.findings.code_candidates import code_candidates
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


def outliers_run(n: int) -> dict:
    """The outliers part alone (outliers_part, the joint rule with the image statistics) over n synthetic images
    and embeddings, with the peak RSS of its process."""
    copies, originals = planting(n, seed=n)
    out = {"n": n, **outliers_part(n, images=GeneratedImages(n, copies, originals, seed=n))}
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


RUNS = {"images": images_run, "exhaustive": exhaustive_run, "codes": codes_run, "outliers": outliers_run}


STAGES = ("stream_s", "candidates_s", "check_s", "align_link_s", "duplicates_s", "outliers_s", "total_s")
#: The issue's bar for the 1M run on this 2-core CPU.
LIMIT_S, LIMIT_RSS_MB = 15 * 60, 8 * 1024


def load() -> dict:
    """The results file; a table from before the bound/IVF change is moved under "superseded"."""
    if not RESULTS.exists():
        return {}
    old = json.loads(RESULTS.read_text())
    if "projection_1m_images" in old:  # the HNSW / all-exact-check table of commit 0b83103
        return {"superseded": {"note": "HNSW candidates and the exact check of every candidate (commit 0b83103); "
                                       "images generated inside the stream stage; replaced by the tables above",
                               **old}}
    return old


def summarise(result: dict) -> None:
    """Growth exponents per stage (images runs; of the wall and of the CPU seconds) and the 1M verdict."""
    ok = sorted((r for r in result.get("images", []) if "error" not in r), key=lambda r: r["n"])
    result["images_growth_exponent"] = {s: slope([r["n"] for r in ok], [r[s] for r in ok]) for s in STAGES
                                        if all(s in r for r in ok)}
    cpu = [s.replace("_s", "_cpu_s") for s in STAGES]
    result["images_growth_exponent_cpu"] = {s: slope([r["n"] for r in ok], [r[s] for r in ok]) for s in cpu
                                            if all(s in r for r in ok)}
    big = [r for r in ok if r["n"] == 1_000_000]
    if big:
        r = big[0]
        result["verdict_1m"] = {"total_s": r["total_s"], "total_cpu_s": r.get("total_cpu_s"),
                                "loadavg_start_end": [r.get("loadavg_start"), r.get("loadavg_end")],
                                "wall_s_with_generation": r["wall_s"],
                                "peak_rss_mb": r["peak_rss_mb"], "limit_s": LIMIT_S, "limit_rss_mb": LIMIT_RSS_MB,
                                "meets_time": r["total_s"] <= LIMIT_S,
                                "cpu_within_limit": r.get("total_cpu_s", float("inf")) <= LIMIT_S,
                                "meets_time_with_generation":
                                r["wall_s"] <= LIMIT_S, "meets_memory": r["peak_rss_mb"] <= LIMIT_RSS_MB}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", default="10000,100000,1000000")
    p.add_argument("--exhaustive", default="20000", help="N for the index against the all-pairs view search")
    p.add_argument("--codes", default="")
    p.add_argument("--outliers", default="", help="N for the outliers part alone (joint rule, image statistics)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--note", default="shared 2-core CPU (other engineers' jobs running beside it)")
    p.add_argument("--code-corners", type=float, default=None,
                   help="ViewMatch.code_corners of the images part (default: ViewMatch's; 0: no corner codes)")
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # (part, n): run in this process, print JSON
    args = p.parse_args()
    global CODE_CORNERS
    CODE_CORNERS = args.code_corners
    import torch
    torch.set_num_threads(args.threads)
    try:
        import faiss
        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        pass
    if args.one:
        part, n = args.one
        print(json.dumps(RUNS[part](int(n))))
        return
    result = load()
    machine = {"cpus": 2, "threads": args.threads, "python": platform.python_version(), "note": args.note}
    if args.images:  # the top-level machine is the images table's; every row also carries its own
        result["machine"] = machine
    for part in RUNS:
        for n in [int(x) for x in getattr(args, part).split(",") if x]:
            t = time.perf_counter()
            corners = [] if args.code_corners is None else ["--code-corners", str(args.code_corners)]
            proc = subprocess.Popen([sys.executable, __file__, "--threads", str(args.threads), *corners, "--one", part,
                                     str(n)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            errors = collections.deque(maxlen=40)
            for line in proc.stderr:  # the child's progress, passed on as it comes (its JSON comes last on stdout)
                print(f"  [{part} {n}] {line}", end="", file=sys.stderr, flush=True)
                errors.append(line)
            stdout = proc.stdout.read()
            status = proc.wait()
            row = ({"n": n, "part": part, "error": f"exit status {status} (negative: killed by that signal, e.g. "
                    f"-9 by the OOM killer): " + "".join(errors)[-2000:]} if status
                   else json.loads(stdout.strip().splitlines()[-1]))
            row["process_wall_s"] = time.perf_counter() - t  # imports and start-up included
            row["machine"] = machine
            if status:  # a failed run is recorded apart and never replaces a measured row
                result.setdefault("failed", []).append(row)
            else:
                result[part] = sorted([r for r in result.get(part, []) if r["n"] != n] + [row],
                                      key=lambda r: r["n"])
            print(part, row, file=sys.stderr, flush=True)
            summarise(result)
            RESULTS.write_text(json.dumps(result, indent=1))
    summarise(result)
    RESULTS.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "superseded"}, indent=1))


if __name__ == "__main__":
    main()
