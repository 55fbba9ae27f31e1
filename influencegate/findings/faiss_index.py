"""Nearest neighbours by cosine through a faiss index (optional: `pip install influencegate[index]`), for
embedding sets too large for the exact blockwise search of `similarity.py`.

"faiss-flat" is exact (IndexFlatIP on L2-normalised rows: the same neighbours as `knn_cosine`, faster on large
CPU sets); "faiss-hnsw" is approximate (IndexHNSWFlat, 32 links per node, efSearch 128), sub-linear per query;
"faiss-ivf" is approximate (IndexIVFFlat: about 2 sqrt(M) k-means cells trained on a sample, IVF_NPROBE of them
searched per query, exact inner products inside), the cheapest to build at millions of rows.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

INDEXES = ("faiss-flat", "faiss-hnsw", "faiss-ivf")
#: Cells searched per query by "faiss-ivf".
IVF_NPROBE = 8


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # a usage error, not a crash: say what to install
        raise ImportError("the faiss index needs faiss: pip install 'influencegate[index]' (faiss-cpu)") from exc
    return faiss


def ivf_cells(n: int, per_sqrt: float) -> int:
    """IVF cells for n base rows: about per_sqrt x sqrt(n), at least 40 rows per cell, at least 1."""
    return max(1, min(int(round(per_sqrt * np.sqrt(n))), n // 40))


def ivf_index(x: np.ndarray, cells: int, nprobe: int, train_per_cell: int, fp16: bool = False) -> Any:
    """An inner-product faiss IVF index of `cells` k-means cells (10 iterations) trained on a seeded sample of
    train_per_cell rows per cell of x (N x d float32), `nprobe` cells searched per query; its lists hold the
    rows as float32 (IndexIVFFlat) or float16 (fp16: IndexIVFScalarQuantizer QT_fp16). Empty: add() the rows."""
    faiss = _faiss()
    d = x.shape[1]
    quantiser = faiss.IndexFlatIP(d)
    if fp16:
        searcher = faiss.IndexIVFScalarQuantizer(quantiser, d, cells, faiss.ScalarQuantizer.QT_fp16,
                                                 faiss.METRIC_INNER_PRODUCT)
    else:
        searcher = faiss.IndexIVFFlat(quantiser, d, cells, faiss.METRIC_INNER_PRODUCT)
    searcher.cp.niter = 10
    sample = np.random.default_rng(0).choice(len(x), min(len(x), train_per_cell * cells), replace=False)
    searcher.train(x[np.sort(sample)])
    searcher.nprobe = min(int(nprobe), cells)
    return searcher


#: Query rows per faiss search call: the transient search output stays bounded (chunk x (k + 1) results).
SEARCH_CHUNK = 65_536


def faiss_knn_chunks(embeddings: np.ndarray, k: int, index: str = "faiss-hnsw",
                     chunk: int = SEARCH_CHUNK) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(start row, cosine similarities B x k descending, indices B x k) for consecutive chunks of at most
    `chunk` query rows: each row's k nearest other rows (itself excluded; k capped at M - 1) through one
    index of all M rows; `index` is "faiss-flat" (exact), "faiss-hnsw" or "faiss-ivf" (approximate)."""
    if index not in INDEXES:
        raise ValueError(f"index must be one of {INDEXES}, got {index!r}")
    faiss = _faiss()
    x = np.ascontiguousarray(embeddings, dtype=np.float32).copy()
    n, d = x.shape
    k = min(int(k), n - 1)
    if k < 1:
        raise ValueError(f"k nearest neighbours need at least 2 samples and k >= 1 (have {n} samples, k={k})")
    faiss.normalize_L2(x)
    if index == "faiss-flat":
        searcher = faiss.IndexFlatIP(d)
    elif index == "faiss-hnsw":
        searcher = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        searcher.hnsw.efSearch = max(128, 2 * k)
    else:
        searcher = ivf_index(x, ivf_cells(n, 2.0), IVF_NPROBE, train_per_cell=64)
    searcher.add(x)
    for start in range(0, n, max(1, int(chunk))):
        sims, idx = searcher.search(x[start:start + chunk], k + 1)
        own = idx == np.arange(start, start + len(idx))[:, None]
        keep = ~own
        keep[own.sum(1) == 0, -1] = False  # a row whose own match fell out keeps its k best others
        b = len(idx)
        yield start, sims[keep].reshape(b, k).astype(np.float32), idx[keep].reshape(b, k).astype(np.int64)


def faiss_knn(embeddings: np.ndarray, k: int, index: str = "faiss-hnsw") -> tuple[np.ndarray, np.ndarray]:
    """(cosine similarities M x k descending, indices M x k) of each row's k nearest other rows (itself
    excluded; k capped at M - 1); `index` is "faiss-flat" (exact), "faiss-hnsw" or "faiss-ivf" (approximate)."""
    parts = list(faiss_knn_chunks(embeddings, k, index))
    return np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


def faiss_pairs(embeddings: np.ndarray, threshold: float, k: int = 10,
                index: str = "faiss-hnsw") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs i < j with cosine >= threshold among each row's k nearest neighbours: (i, j, similarity), sorted
    by (i, j). A row with more than k partners above the threshold keeps its k nearest (its group still
    connects through them)."""
    sims, idx = faiss_knn(embeddings, k, index)
    rows = np.repeat(np.arange(len(idx)), idx.shape[1])
    cols, values = idx.reshape(-1), sims.reshape(-1)
    hit = (values >= threshold) & (cols >= 0) & (cols != rows)
    i, j, v = np.minimum(rows[hit], cols[hit]), np.maximum(rows[hit], cols[hit]), values[hit]
    order = np.lexsort((-v, j, i))  # by (i, j), the largest similarity of a pair found from both rows first
    i, j, v = i[order], j[order], v[order]
    first = np.ones(len(i), dtype=bool)
    first[1:] = (i[1:] != i[:-1]) | (j[1:] != j[:-1])
    return i[first].astype(np.int64), j[first].astype(np.int64), v[first].astype(np.float32)
