"""Sub-quadratic near-duplicate search: candidate pairs from an index, the multi-view check on those only
(issue 14).

One streaming pass over the images (`ViewIndex.add`, a batch at a time) keeps, per image:
  * codes: its anchor views (views.py) projected by one fixed Gaussian random matrix to `dim` (64) numbers
    and L2-normalised, float16: A x dim x 2 bytes (3 x 64 x 2 = 384 B) in RAM;
  * its base thumbnail (K x b x b, uint8: 3 x 48 x 48 = 6.9 KiB) appended to a file on disk (a temporary
    file unless `path` is given), never all of them in RAM.
Memory in RAM therefore grows by 384 B per image, whatever the images' size; one batch of views at a time.

`candidates(k)`: every anchor code of every image queries the whole-image codes (faiss HNSW, or an exact
blockwise search when faiss is absent or index="exact") for its k nearest; each (image, neighbour) is a
candidate pair. `pairs()`: the candidates' exact view similarity (views.pair_similarity), recomputed from the
stored thumbnails in chunks, then ViewMatch's rule with each image's k-th best among its candidates.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from typing import Iterable

import numpy as np
import torch

from influencegate.findings.views import ViewMatch, _base, anchor_index, kth_best, link, pair_similarity, view_descriptors

#: Neighbours per query code: a copy is found when it is among the k nearest whole-image codes of one anchor.
CANDIDATE_K = 10
CODE_DIM = 64


class ViewIndex:
    """Streaming index of image codes and stored thumbnails (module docstring)."""

    def __init__(self, match: ViewMatch = ViewMatch(), dim: int = CODE_DIM, seed: int = 0,
                 path: str | os.PathLike | None = None) -> None:
        self.match, self.dim, self.seed = match, int(dim), int(seed)
        self._anchors = anchor_index(replace(match, flip=False))
        self._codes: list[np.ndarray] = []
        self._proj: torch.Tensor | None = None
        self._shape: tuple[int, ...] | None = None
        if path is None:
            handle, path = tempfile.mkstemp(suffix=".thumbs")
            os.close(handle)
        self.path = str(path)
        self._file = open(self.path, "wb")
        self.count = 0

    def add(self, images: torch.Tensor | np.ndarray) -> None:
        """Index one batch: M x C x H x W (or M x H x W) pixels in [0, 1] (same C, H, W for every batch)."""
        x = torch.as_tensor(images, dtype=torch.float32)
        base = _base(x, 3 * self.match.side, self.match.colour, "cpu")
        if self._shape is None:
            self._shape = tuple(base.shape[1:])
        elif tuple(base.shape[1:]) != self._shape:
            raise ValueError(f"every batch must give thumbnails of shape {self._shape}, got {tuple(base.shape[1:])}")
        self._file.write(np.clip(np.round(base.numpy() * 255), 0, 255).astype(np.uint8).tobytes())
        views = view_descriptors(base / 1.0, replace(self.match, flip=False))[:, self._anchors]  # M x A x F
        if self._proj is None:
            gen = torch.Generator().manual_seed(self.seed)
            self._proj = torch.randn(views.shape[-1], self.dim, generator=gen)
        codes = torch.nn.functional.normalize(views @ self._proj, dim=-1)
        self._codes.append(codes.to(torch.float16).numpy().copy())  # numpy-owned: counted by tracemalloc
        self.count += len(x)

    def codes(self) -> np.ndarray:
        """N x A x dim float32 codes (A anchors: the whole image first)."""
        return np.concatenate(self._codes).astype(np.float32) if self._codes else np.zeros((0, 1, self.dim), np.float32)

    def thumbnails(self, rows: np.ndarray) -> torch.Tensor:
        """The stored K x b x b thumbnails of `rows`, float32 in [0, 1]."""
        self._file.flush()
        store = np.memmap(self.path, dtype=np.uint8, mode="r", shape=(self.count, *self._shape))
        return torch.from_numpy(np.asarray(store[np.asarray(rows)], dtype=np.float32) / 255.0)

    def candidates(self, k: int = CANDIDATE_K, index: str = "faiss-hnsw") -> tuple[np.ndarray, np.ndarray]:
        """Candidate pairs of the indexed images (code_candidates)."""
        return code_candidates(self.codes(), k, index)

    def pairs(self, k: int = CANDIDATE_K, index: str = "faiss-hnsw",
              chunk: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(i, j, s, candidates): the linked pairs among the candidates, by ViewMatch's similarity and rule
        (the relative rule's k-th best is taken among each image's candidates), and how many were checked."""
        ci, cj = self.candidates(k, index)
        sims = np.zeros(len(ci), dtype=np.float32)
        for start in range(0, len(ci), chunk):  # candidates are sorted by i: a chunk touches few images
            a, b = ci[start:start + chunk], cj[start:start + chunk]
            rows = np.unique(np.concatenate([a, b]))
            views = view_descriptors(self.thumbnails(rows), self.match)
            va, vb = views[np.searchsorted(rows, a)], views[np.searchsorted(rows, b)]
            sims[start:start + chunk] = pair_similarity(va, vb, self.match).numpy()
        kth = kth_best(ci, cj, sims, self.count, int(self.match.k))
        ok = link(ci, cj, sims, kth, self.match)
        return ci[ok], cj[ok], sims[ok], len(ci)

    def close(self) -> None:
        """Close and delete the thumbnail file."""
        self._file.close()
        if os.path.exists(self.path):
            os.remove(self.path)


def code_candidates(codes: np.ndarray, k: int = CANDIDATE_K,
                    index: str = "faiss-hnsw") -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs (i < j, unique, sorted) from codes N x A x dim (unit rows, the whole image first): each
    anchor code's k nearest whole-image codes. index: "faiss-hnsw" (approximate, sub-linear per query) or
    "exact" (blockwise, O(N^2))."""
    n, a = codes.shape[0], codes.shape[1]
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    k = min(int(k), n - 1)
    queries = np.ascontiguousarray(codes.reshape(n * a, -1), dtype=np.float32)
    base = np.ascontiguousarray(codes[:, 0], dtype=np.float32)
    if index == "exact":
        neighbours = _exact_knn(queries, base, k + 1)
    elif index == "faiss-hnsw":
        import faiss
        searcher = faiss.IndexHNSWFlat(base.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        searcher.hnsw.efSearch = max(64, 2 * k)
        searcher.add(base)
        neighbours = searcher.search(queries, k + 1)[1]
    else:
        raise ValueError(f"index must be 'faiss-hnsw' or 'exact', got {index!r}")
    rows = np.repeat(np.arange(n), a * neighbours.shape[1])
    cols = neighbours.reshape(-1)
    ok = (cols >= 0) & (cols != rows)
    pairs = np.unique(np.minimum(rows[ok], cols[ok]) * n + np.maximum(rows[ok], cols[ok]))
    return pairs // n, pairs % n


def _exact_knn(queries: np.ndarray, base: np.ndarray, k: int, block: int = 4096) -> np.ndarray:
    """Q x k indices of each query's k highest inner products with the base rows (blockwise over queries)."""
    b = torch.from_numpy(base)
    out = []
    for start in range(0, len(queries), block):
        s = torch.from_numpy(queries[start:start + block]) @ b.T
        out.append(torch.topk(s, min(k, b.shape[0]), dim=1).indices.numpy())
    return np.concatenate(out)


def indexed_view_pairs(batches: Iterable[torch.Tensor | np.ndarray], match: ViewMatch = ViewMatch(),
                       k: int = CANDIDATE_K, index: str = "faiss-hnsw") -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One streaming pass over `batches` of images, then `ViewIndex.pairs`: (i, j, s, candidates checked)."""
    idx = ViewIndex(match)
    try:
        for batch in batches:
            idx.add(batch)
        return idx.pairs(k, index)
    finally:
        idx.close()
