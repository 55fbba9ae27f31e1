"""Blockwise cosine-similarity search over embeddings (CPU or CUDA), never the full N x N matrix at once.

Memory: one block_size x block_size similarity tile at a time (2048 x 2048 float32 = 16 MiB), plus the
(normalised) embeddings on the device. Exact search; `index="faiss-flat"` / `"faiss-hnsw"` / `"faiss-ivf"` hands
the search to a faiss index instead (`faiss_index.py`; HNSW and IVF are approximate and scale to millions of
samples).
"""
from __future__ import annotations

import numpy as np
import torch

from influencegate.heap import release_heap

DEFAULT_BLOCK = 2048


def no_pairs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, s) of no pairs: int64, int64, float32, all empty."""
    return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)


def normalized(embeddings: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """float32 tensor of the rows scaled to unit L2 norm (a zero row stays zero), on `device`."""
    x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32), device=device)
    return torch.nn.functional.normalize(x, dim=1, eps=1e-12)


def check_block(block_size: int) -> int:
    """block_size as an int; ValueError unless it is >= 1."""
    if int(block_size) < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size}")
    return int(block_size)


#: "exact" = the blockwise torch search below; the others are faiss indexes (faiss_index.INDEXES).
SEARCH_INDEXES = ("exact", "faiss-flat", "faiss-hnsw", "faiss-ivf")
#: With a faiss index, near-duplicate pairs are searched among each row's FAISS_PAIR_K nearest neighbours.
FAISS_PAIR_K = 10


def check_index(index: str) -> str:
    """index, or ValueError naming the choices."""
    if index not in SEARCH_INDEXES:
        raise ValueError(f"index must be one of {SEARCH_INDEXES}, got {index!r}")
    return index


@torch.no_grad()
def cosine_pairs(embeddings: np.ndarray, threshold: float, block_size: int = DEFAULT_BLOCK,
                 device: str | torch.device = "cpu", index: str = "exact") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs i < j with cosine(e_i, e_j) >= threshold: (i, j, similarity) as int64, int64, float32 arrays
    sorted by (i, j). Tiles of block_size x block_size over the upper triangle only; with a faiss `index`,
    the pairs among each row's FAISS_PAIR_K nearest neighbours."""
    if check_index(index) != "exact":
        from influencegate.findings.faiss_index import faiss_pairs

        return faiss_pairs(embeddings, threshold, FAISS_PAIR_K, index)
    block = check_block(block_size)
    x = normalized(embeddings, device)
    n = x.shape[0]
    rows, cols, sims = [], [], []
    for r0 in range(0, n, block):
        a = x[r0:r0 + block]
        for c0 in range(r0, n, block):
            s = a @ x[c0:c0 + block].T
            ii, jj = torch.nonzero(s >= threshold, as_tuple=True)
            gi, gj = ii + r0, jj + c0
            keep = gi < gj
            rows.append(gi[keep].cpu())
            cols.append(gj[keep].cpu())
            sims.append(s[ii[keep], jj[keep]].float().cpu())
    if not rows:
        return no_pairs()
    i, j, v = (torch.cat(t).numpy() for t in (rows, cols, sims))
    order = np.lexsort((j, i))
    return i[order].astype(np.int64), j[order].astype(np.int64), v[order].astype(np.float32)


@torch.no_grad()
def knn_cosine(embeddings: np.ndarray, k: int, block_size: int = DEFAULT_BLOCK,
               device: str | torch.device = "cpu", index: str = "exact") -> tuple[np.ndarray, np.ndarray]:
    """(similarities M x k descending, indices M x k) of each row's k nearest other rows by cosine
    (itself excluded). k is capped at M - 1. `index`: "exact" (blockwise) or a faiss index."""
    if check_index(index) != "exact":
        from influencegate.findings.faiss_index import faiss_knn

        return faiss_knn(embeddings, k, index)
    block = check_block(block_size)
    x = normalized(embeddings, device)
    n = x.shape[0]
    k = min(int(k), n - 1)
    if k < 1:
        raise ValueError(f"k nearest neighbours need at least 2 samples and k >= 1 (have {n} samples, k={k})")
    out_s = torch.empty((n, k), device=x.device)
    out_i = torch.empty((n, k), dtype=torch.long, device=x.device)
    for r0 in range(0, n, block):
        a = x[r0:r0 + block]
        rows = torch.arange(a.shape[0], device=x.device)
        best_s = torch.full((a.shape[0], k), -4.0, device=x.device)
        best_i = torch.zeros((a.shape[0], k), dtype=torch.long, device=x.device)
        for c0 in range(0, n, block):
            s = a @ x[c0:c0 + block].T
            if c0 < r0 + a.shape[0] and r0 < c0 + s.shape[1]:  # tile crosses the diagonal: drop self-pairs
                c = rows + r0 - c0
                ok = (c >= 0) & (c < s.shape[1])
                s[rows[ok], c[ok]] = -3.0
            # the tile's own k best first (block x k), then merged with the running best (block x 2k): no
            # block x (block + k) copy per tile, whose changing sizes fragmented the heap (RSS grew with N)
            tile = torch.topk(s, min(k, s.shape[1]), dim=1)
            merged = torch.topk(torch.cat([best_s, tile.values], dim=1), k, dim=1)
            best_i = torch.gather(torch.cat([best_i, tile.indices + c0], dim=1), 1, merged.indices)
            best_s = merged.values
        out_s[r0:r0 + a.shape[0]], out_i[r0:r0 + a.shape[0]] = best_s, best_i
        release_heap()
    return out_s.cpu().numpy(), out_i.cpu().numpy()


def knn_mean_distances(embeddings: np.ndarray, ks: tuple[int, ...], block_size: int = DEFAULT_BLOCK,
                       device: str | torch.device = "cpu", index: str = "exact") -> np.ndarray:
    """M x len(ks) float64: each row's mean cosine distance (1 - cosine) to its ks[j] nearest other rows
    (each k capped at M - 1), from one search at max(ks). With a faiss `index` the search runs a chunk of rows
    at a time and keeps only the means (memory M x len(ks), not M x max(ks))."""
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive neighbour counts, got {ks}")
    if check_index(index) != "exact":
        from influencegate.findings.faiss_index import faiss_knn_chunks

        chunks = ((s, sims) for s, sims, _ in faiss_knn_chunks(embeddings, max(ks), index))
    else:
        chunks = iter([(0, knn_cosine(embeddings, max(ks), block_size, device)[0])])
    out = np.empty((len(embeddings), len(ks)))
    for start, sims in chunks:
        out[start:start + len(sims)] = mean_distances(sims, ks)
    return out


def mean_distances(sims: np.ndarray, ks: tuple[int, ...]) -> np.ndarray:
    """R x len(ks) float64: the mean cosine distance (1 - s) over the first ks[j] columns (each capped at the
    width) of R x K neighbour similarities sorted descending."""
    dist = np.cumsum(1.0 - sims.astype(np.float64), axis=1)
    cols = [min(k, dist.shape[1]) - 1 for k in ks]
    return dist[:, cols] / (np.asarray(cols) + 1.0)
