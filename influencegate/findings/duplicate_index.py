"""Sub-quadratic near-duplicate search: candidate pairs from an index, the multi-view check on those only
(issue 14).

One streaming pass over the images (`ViewIndex.add`, a batch at a time) keeps, per image:
  * codes: its anchor views (views.py) projected by one fixed Gaussian random matrix to `dim` (64) numbers
    and L2-normalised, float16: A x dim x 2 bytes (3 x 64 x 2 = 384 B) in RAM;
  * its base thumbnail (K x b x b, uint8: 3 x 48 x 48 = 6.9 KiB) and its anchor views (A' x K D^2, float16:
    3 x 768 x 2 = 4.5 KiB; A' = 2A with flip) appended to two files on disk (temporary unless `path` is
    given), never all of them in RAM.
Memory in RAM therefore grows by 384 B per image, whatever the images' size; one batch of views at a time.

`candidates(k)`: every anchor code of every image queries the whole-image codes (faiss HNSW, or an exact
blockwise search when faiss is absent or index="exact") for its k nearest; each (image, neighbour) is a
candidate pair. `pairs()`: the candidates' exact view similarity (`similarity`: each image's search views
computed once from its stored thumbnail, against its partners' stored anchors: linear in images + pairs),
then ViewMatch's rule with each image's k-th best among its candidates.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from typing import Iterable

import numpy as np
import torch

from influencegate.data.mapped import MappedArray
from influencegate.findings.views import ViewMatch, _base, kth_best, link, search_count, view_descriptors
from influencegate.heap import release_heap

#: Neighbours per query code: a copy is found when it is among the k nearest whole-image codes of one anchor.
CANDIDATE_K = 10
CODE_DIM = 64
#: Images per block of the codes kept in RAM (3 x 64 float16 each: 48 MiB per block, above glibc's largest
#: mmap threshold, so a block never pins the heap).
CODE_BLOCK = 1 << 17
#: Padded partner slots per batched product of the check (rows x their largest partner count).
PAD_SLOTS = 8192


class ViewIndex:
    """Streaming index of image codes, stored thumbnails and anchor views (module docstring)."""

    def __init__(self, match: ViewMatch = ViewMatch(), dim: int = CODE_DIM, seed: int = 0,
                 path: str | os.PathLike | None = None) -> None:
        self.match, self.dim, self.seed = match, int(dim), int(seed)
        self._anchor_windows = match.windows()[1]
        self._codes: list[np.ndarray] = []
        self._proj: torch.Tensor | None = None
        self._shape: tuple[int, ...] | None = None
        self._anchor_shape: tuple[int, ...] | None = None
        if path is None:
            handle, path = tempfile.mkstemp(suffix=".thumbs")
            os.close(handle)
        self.path, self.anchor_path = str(path), str(path) + ".anchors"
        self._file, self._anchor_file = open(self.path, "wb"), open(self.anchor_path, "wb")
        self.count = 0

    def add(self, images: torch.Tensor | np.ndarray) -> None:
        """Index one batch: M x C x H x W (or M x H x W) images, any per-image scale (pixels in [0, 1] or
        normalised; same C, H, W for every batch)."""
        x = torch.as_tensor(images, dtype=torch.float32)
        base = _base(x, 3 * self.match.side, self.match.colour, "cpu")
        if self._shape is None:
            self._shape = tuple(base.shape[1:])
        elif tuple(base.shape[1:]) != self._shape:
            raise ValueError(f"every batch must give thumbnails of shape {self._shape}, got {tuple(base.shape[1:])}")
        # each thumbnail stretched to its own [min, max] before quantising: any normalisation of the input
        # (pixels in [0, 1] or standardised) uses all 256 levels; the views are invariant to it (centred, unit)
        lo = base.amin(dim=(1, 2, 3), keepdim=True)
        span = (base.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-12)
        thumbs = torch.round((base - lo) / span * 255).to(torch.uint8).numpy()
        self._file.write(thumbs.tobytes())
        # anchors of the stored (quantised) thumbnails: exactly what the check compares against
        anchors = view_descriptors(torch.from_numpy(thumbs).float() / 255.0, self.match, only=self._anchor_windows)
        self._anchor_shape = tuple(anchors.shape[1:])
        self._anchor_file.write(anchors.to(torch.float16).numpy().tobytes())
        if self._proj is None:
            gen = torch.Generator().manual_seed(self.seed)
            self._proj = torch.randn(anchors.shape[-1], self.dim, generator=gen)
        plain = anchors[:, :len(self._anchor_windows)]  # codes of the un-mirrored anchors
        codes = torch.nn.functional.normalize(plain @ self._proj, dim=-1)
        self._store_codes(codes.to(torch.float16).numpy())
        self.count += len(x)
        release_heap()

    def _store_codes(self, codes: np.ndarray) -> None:
        """Append M x A x dim codes into blocks of CODE_BLOCK images (allocated whole, filled as images come):
        one small array per batch, kept alive between the batch's freed temporaries, pinned glibc's heap and
        grew RSS by ~5 KiB per image; a block this size is always its own memory map."""
        done = 0
        while done < len(codes):
            at = (self.count + done) % CODE_BLOCK
            if at == 0:
                self._codes.append(np.empty((CODE_BLOCK, *codes.shape[1:]), dtype=np.float16))
            take = min(len(codes) - done, CODE_BLOCK - at)
            self._codes[-1][at:at + take] = codes[done:done + take]
            done += take

    def codes(self) -> np.ndarray:
        """N x A x dim float32 codes (A anchors: the whole image first)."""
        if not self._codes:
            return np.zeros((0, 1, self.dim), np.float32)
        return np.concatenate(self._codes).astype(np.float32)[:self.count]

    def thumbnails(self, rows: np.ndarray) -> torch.Tensor:
        """The stored K x b x b thumbnails of `rows`, float32 in [0, 1] (each stretched to its own range)."""
        return torch.from_numpy(self._store().read(np.asarray(rows)).astype(np.float32) / 255.0)

    def _store(self) -> MappedArray:
        self._file.flush()
        return MappedArray(self.path, np.uint8, (self.count, *self._shape))

    def _anchors(self) -> MappedArray:
        self._anchor_file.flush()
        return MappedArray(self.anchor_path, np.float16, (self.count, *self._anchor_shape))

    def candidates(self, k: int = CANDIDATE_K, index: str = "faiss-hnsw") -> tuple[np.ndarray, np.ndarray]:
        """Candidate pairs of the indexed images (code_candidates)."""
        return code_candidates(self.codes(), k, index)

    def similarity(self, ci: np.ndarray, cj: np.ndarray, block: int = 256) -> np.ndarray:
        """float32 P: views.pair_similarity of the pairs (ci, cj), linear in images + pairs. s = max of two
        halves, (search views of one image) . (stored anchors of the other); the halves are sorted by their
        searching image and the images taken in blocks of `block` rows of the thumbnail store, so each image's
        search views (S x K D^2, 105 KiB) are computed once; one batched product per group of rows, each
        image's partners padded to its group's largest count, groups cut so that rows x largest count <=
        PAD_SLOTS (an index hub with thousands of partners gets a group of its own). Memory: block x S views
        (~27 MiB at the defaults) and one buffer of PAD_SLOTS x A' anchors (~75 MiB), reused by every group."""
        p = len(ci)
        sims = np.full(p, -2.0, dtype=np.float32)
        if p == 0:
            return sims
        own, other = np.concatenate([ci, cj]), np.concatenate([cj, ci])
        order = np.argsort(own, kind="stable")
        own, other, pair = own[order], other[order], order % p
        bounds = np.searchsorted(own, np.arange(self.count + 1))  # halves of image r: bounds[r]:bounds[r + 1]
        store, anchors = self._store(), self._anchors()
        plain = replace(self.match, flip=False)
        search = list(range(search_count(self.match)))
        per_slot = int(np.prod(self._anchor_shape))
        buffer = np.zeros(PAD_SLOTS * per_slot, dtype=np.float32)
        for b0 in range(0, self.count, block):
            b1 = min(b0 + block, self.count)
            lo, hi = bounds[b0], bounds[b1]
            if lo == hi:
                continue
            thumbs = torch.from_numpy(store.read(slice(b0, b1)).astype(np.float32) / 255.0)
            views = view_descriptors(thumbs, plain, only=search)  # B x S x F
            for r0, r1 in _row_groups(np.diff(bounds[b0:b1 + 1]), PAD_SLOTS):
                r0, r1, lo, hi = b0 + r0, b0 + r1, bounds[b0 + r0], bounds[b0 + r1]
                if lo == hi:
                    continue
                count = np.diff(bounds[r0:r1 + 1])
                slot = np.arange(lo, hi) - np.repeat(bounds[r0:r1], count)  # each half's place among its image's
                slots = (r1 - r0) * int(count.max())
                if slots * per_slot > len(buffer):  # a hub row alone above PAD_SLOTS
                    buffer = np.zeros(slots * per_slot, dtype=np.float32)
                # one buffer for every group (padding slots keep stale values; only real slots are read back):
                # fresh arrays of a different size per group fragmented the heap, RSS grew with N
                padded = buffer[:slots * per_slot].reshape(r1 - r0, int(count.max()), *self._anchor_shape)
                padded[own[lo:hi] - r0, slot] = anchors.read(other[lo:hi])
                theirs = torch.from_numpy(padded).flatten(1, 2)  # R x (most partners x A') x F
                best = torch.bmm(views[r0 - b0:r1 - b0], theirs.transpose(1, 2)).amax(dim=1)
                half = best.reshape(len(padded), -1, padded.shape[2]).amax(dim=2).numpy()[own[lo:hi] - r0, slot]
                np.maximum.at(sims, pair[lo:hi], half)
            release_heap()
        return sims

    def pairs(self, k: int = CANDIDATE_K, index: str = "faiss-hnsw") -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(i, j, s, candidates): the linked pairs among the candidates, by ViewMatch's similarity and rule
        (the relative rule's k-th best is taken among each image's candidates), and how many were checked."""
        ci, cj = self.candidates(k, index)
        sims = self.similarity(ci, cj)
        kth = kth_best(ci, cj, sims, self.count, int(self.match.k))
        ok = link(ci, cj, sims, kth, self.match)
        return ci[ok], cj[ok], sims[ok], len(ci)

    def close(self) -> None:
        """Close and delete the thumbnail and anchor files."""
        for handle, path in ((self._file, self.path), (self._anchor_file, self.anchor_path)):
            handle.close()
            if os.path.exists(path):
                os.remove(path)


def _row_groups(count: np.ndarray, slots: int) -> list[tuple[int, int]]:
    """Consecutive (start, stop) row ranges with (stop - start) x max(count[start:stop]) <= slots (a single row
    may exceed it)."""
    groups, start, most = [], 0, 0
    for r, c in enumerate(count.tolist()):
        if r > start and (r + 1 - start) * max(most, c) > slots:
            groups.append((start, r))
            start, most = r, 0
        most = max(most, c)
    groups.append((start, len(count)))
    return groups


def available_index() -> str:
    """"faiss-hnsw" when faiss is installed (influencegate[index]), else "exact" (blockwise kNN of the codes)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return "exact"
    return "faiss-hnsw"


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
