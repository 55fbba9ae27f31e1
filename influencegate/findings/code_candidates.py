"""Candidate pairs for the streaming duplicate index (issue 14): each anchor code's (and corner code's, from
session 16: code_windows) nearest whole-image codes, from a faiss IVF or HNSW index (influencegate[index]) or an
exact blockwise search.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from influencegate.findings.faiss_index import ivf_cells, ivf_index
from influencegate.findings.views import ViewMatch

#: Neighbours per anchor code without corner codes (ViewMatch.code_corners = 0): a copy is found when it is among
#: the k nearest whole-image codes of one anchor.
CANDIDATE_K = 10
#: Neighbours per anchor code beside the corner codes (the default). Chosen in session 17
#: (benchmarks/index_neighbours.py, results/index_neighbours.json) on the tuning split (every all-pairs link among
#: the candidates, as CORNER_K; the smallest of 4/6/10 that keeps all 1,860: 10.4 candidates per image against
#: 13.9) and on findings_scale's synthetic 100k set as the development set (planted-copy candidate recall 0.949
#: at 28.5 candidates per image against 0.9515 at 41.3 with 10 and the 0.9 anchor querying).
CORNER_ANCHOR_K = 4
#: Neighbours of each corner code (code_windows) among the whole-image codes (the anchors: CORNER_ANCHOR_K).
#: Chosen with ViewMatch.code_corners on the tuning split (session 16; duplicates_natural_corner_tuning.json):
#: every all-pairs link among the candidates at the fewest candidates per image.
CORNER_K = 5
#: Candidate indexes of code_candidates.
CANDIDATE_INDEXES = ("faiss-ivf", "faiss-hnsw", "exact")
#: IVF cells probed per query (of about 4 sqrt(N) cells). On the 100k synthetic images of
#: benchmarks/findings_scale.py (planted-copy recall of the candidates; search seconds on one shared core,
#: float32 lists): 2 sqrt(N) cells x 8 probed 0.898 (4.8 s), x 16 0.918 (8.7 s), x 32 0.935 (16.1 s);
#: 4 sqrt(N) x 16 0.909 (5.6 s), x 24 0.922 (7.8 s), x 32 0.924 (10.1 s); 8 sqrt(N) x 32 0.926 (7.8 s + 3 s
#: training); HNSW 0.937 (68 s). The lists hold the float16 codes as they are (QT_fp16: same recall, -27%
#: time). 16, not 24: at 1M, 24 probes took the candidates to 575 s (float32 lists) and the whole run past
#: 15 minutes on this shared CPU. The copies it misses have code similarities of 0.25-0.6 (shifts). Codes
#: from views blurred twice as much (ViewMatch.code_blur=2) put 81% / 77% of the tuning split's shifted
#: copies above the 99.9th percentile of unrelated pairs' code similarity (68% / 54% at the default) and
#: their exact kNN holds 98% of the all-pairs links on 20,000 synthetic images (94%), but their nearest
#: codes are coarser look-alikes, so each image's k-th best among its candidates drops: on the held-out
#: photos precision fell by 0.3-1.7 points in 6 of 40 cells (measured with the view rule, before the
#: aligned check). Off by default.
IVF_NPROBE = 16
#: Query codes per search call (bounds the memory of queries and results).
QUERY_BATCH = 1 << 18


def available_index() -> str:
    """"faiss-ivf" when faiss is installed (influencegate[index]), else "exact" (blockwise kNN of the codes)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return "exact"
    return "faiss-ivf"


def code_candidates(codes: np.ndarray, k: int = CANDIDATE_K, index: str = "faiss-ivf",
                    nprobe: int = IVF_NPROBE, extra_k: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs (i < j, unique, sorted) from codes N x A x dim (unit rows, the whole image first): each
    anchor code's k nearest whole-image codes. index: "faiss-ivf" (approximate: an inverted file of
    faiss_index.ivf_cells(N, 4) k-means cells trained on 40 codes per cell, `nprobe` cells searched per
    query, inner products of the float16 codes inside them; O(N^1.5)), "faiss-hnsw" (approximate, graph) or
    "exact" (blockwise, O(N^2)). Queries are searched QUERY_BATCH at a time. extra_k: the neighbours kept for
    each of the last len(extra_k) codes of an image (the index's corner codes, code_windows)
    instead of k."""
    if index not in CANDIDATE_INDEXES:
        raise ValueError(f"index must be one of {CANDIDATE_INDEXES}, got {index!r}")
    n, a = codes.shape[0], codes.shape[1]
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    per_code = np.minimum(np.array([int(k)] * (a - len(extra_k)) + [int(e) for e in extra_k]), n - 1)
    k = int(per_code.max())
    base = np.ascontiguousarray(codes[:, 0], dtype=np.float32)
    # the images in the order their queries are searched: with IVF by the cell of their whole-image code, so
    # that consecutive queries probe mostly the same cells while those are in cache (the scan of the probed
    # cells is bound by memory bandwidth: -12% time for one batch of queries on a million
    # synthetic clustered codes, three repeats; not measurable apart inside the 1M benchmark run)
    visit = np.arange(n)
    if index == "exact":
        def search(q: np.ndarray) -> np.ndarray:
            return _exact_knn(q, base, k + 1)
    else:
        import faiss
        if index == "faiss-hnsw":
            searcher = faiss.IndexHNSWFlat(base.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
            searcher.hnsw.efSearch = max(64, 2 * k)
        else:
            searcher = ivf_index(base, ivf_cells(n, 4.0), nprobe, train_per_cell=40, fp16=True)
        searcher.add(base)
        if index == "faiss-ivf":
            visit = np.argsort(_ivf_cells_of_rows(searcher, n), kind="stable")

        def search(q: np.ndarray) -> np.ndarray:
            return searcher.search(q, k + 1)[1]
    keys = []
    step = max(1, QUERY_BATCH // a)
    for start in range(0, n, step):
        images = visit[start:start + step]
        queries = np.ascontiguousarray(codes[images].reshape(len(images) * a, -1), dtype=np.float32)
        neighbours = search(queries)
        rows = np.repeat(images, a * neighbours.shape[1])
        cols = neighbours.reshape(-1)
        rank = np.arange(neighbours.shape[1])
        kept = (rank[None, :] < np.tile(per_code, len(images))[:, None] + 1).reshape(-1)  # + 1: the image itself
        ok = (cols >= 0) & (cols != rows) & kept
        keys.append(unique_keys(np.minimum(rows[ok], cols[ok]) * n + np.maximum(rows[ok], cols[ok])))
    pairs = unique_keys(np.concatenate(keys))
    return pairs // n, pairs % n


def _ivf_cells_of_rows(searcher: Any, n: int) -> np.ndarray:
    """int64 n: the IVF cell each of the n added rows was filed under (read from the inverted lists)."""
    import faiss
    cells = np.zeros(n, dtype=np.int64)
    lists = searcher.invlists
    for cell in range(searcher.nlist):
        size = lists.list_size(cell)
        if size:
            cells[faiss.rev_swig_ptr(lists.get_ids(cell), size)] = cell
    return cells


def code_windows(match: ViewMatch) -> list[int]:
    """Positions (in match.windows()[0]) of the windows whose views give an image's codes, the whole image first:
    without corner codes (match.code_corners = 0) its anchors; with them the whole image, the smallest window
    scale's centred anchor and its four windows offset by +-match.code_corners in both axes. A crop to 75-80% off
    the centre is closer to one of its original's corner windows than to the centred one, so its whole-image
    code may meet only a corner code. The anchors between (0.9 of the side) query no more: on the tuning split
    every all-pairs link stays among the candidates without them (not without the 0.8 one: borders), on the
    development set (findings_scale, 100k) the planted recall of the candidates moves 0.950 -> 0.949 at 17%
    less search time (session 17)."""
    wins, anchors = match.windows()
    off = float(match.code_corners)
    if off == 0 or not match.scales:
        return list(anchors)
    small = min(match.scales)
    corners = [w for w, (s, dy, dx) in enumerate(wins)
               if s == small and abs(abs(dy) - off) < 1e-9 and abs(abs(dx) - off) < 1e-9]
    if len(corners) != 4:
        raise ValueError(f"code_corners {off} is not an offset of the {small} windows' grid (step {match.step})")
    return [w for w in anchors if w == 0 or wins[w][0] == small] + corners


def unique_keys(keys: np.ndarray) -> np.ndarray:
    """The distinct values of a 1-d integer array (pair keys i * N + j), sorted: np.unique's result by one sort
    and a neighbour comparison. numpy 2.4's np.unique hashes integers first (8 s for 3 million distinct int64
    keys here, against 0.07 s for the sort), which made it most of the candidate stage at a million images."""
    ordered = np.sort(np.asarray(keys).ravel())
    first = np.ones(len(ordered), dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    return ordered[first]


def _exact_knn(queries: np.ndarray, base: np.ndarray, k: int, block: int = 4096) -> np.ndarray:
    """Q x k indices of each query's k highest inner products with the base rows (blockwise over queries)."""
    b = torch.from_numpy(base)
    out = []
    for start in range(0, len(queries), block):
        s = torch.from_numpy(queries[start:start + block]) @ b.T
        out.append(torch.topk(s, min(k, b.shape[0]), dim=1).indices.numpy())
    return np.concatenate(out)
