"""Sub-quadratic near-duplicate search: candidate pairs from an index, the multi-view check on those only
(issue 14).

One streaming pass over the images (`ViewIndex.add`, a batch at a time) keeps, per image:
  * codes: the views of code_candidates.code_windows (the whole image, the 0.8 anchor and its 4 corner windows;
    blurred by ViewMatch.code_blur if set) projected by one fixed Gaussian random matrix to `dim` (64) numbers
    and L2-normalised, float16: A x dim x 2 bytes (6 x 64 x 2 = 768 B; the 3 anchors' 384 B without the
    corners, ViewMatch.code_corners=0) in RAM;
  * its base thumbnail (K x b x b, uint8: 3 x 48 x 48 = 6.9 KiB), its anchor views (A' x K D^2, float16:
    3 x 768 x 2 = 4.5 KiB; A' = 2A with flip) and their low-frequency bounds (anchor_bounds: A' x
    (K BOUND_LOW^2 + 1) float16, 654 B) appended to three files on disk (temporary unless `path` is given; with
    search_bounds a fourth, its search views' bounds: S x (K BOUND_LOW^2 + 1) float16, 7.6 KiB), never in RAM.
Memory in RAM therefore grows by 768 B per image, whatever the images' size; one batch of views at a time. The
check reads the bounds file into RAM (654 B more per image, while it runs): it gathers them in random order.

`candidates(k)`: every anchor code of every image queries the whole-image codes (faiss IVF, else HNSW or an
exact blockwise search: index=..., "exact" when faiss is absent) for its k nearest (CORNER_ANCHOR_K beside the
corner codes, CANDIDATE_K without them), every corner code for its
CORNER_K nearest; each (image, neighbour) is a candidate pair. `pairs()`: the candidates' view similarity
(`similarity`: each image's search views computed once from its stored thumbnail, against its partners' stored
anchors: linear in images + pairs; first as an upper bound from the lowest DCT frequencies, the exact views only
where that bound does not already rule the pair out of every link: prune_floor), the aligned check (align.py) of
the pairs it proposes (and of each image's nearest candidate down to ViewMatch.nearest), read from the stored
thumbnails, then ViewMatch's rule with each image's k-th best view similarity among its candidates.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from typing import Iterable

import numpy as np
import torch

from influencegate.data.mapped import MappedArray
from influencegate.findings.code_candidates import (CANDIDATE_K, CORNER_ANCHOR_K, CORNER_K, code_candidates,
                                                     code_windows)
from influencegate.findings.pair_scan import RELEASE_EVERY, pair_max_products
from influencegate.findings.view_search import aligned_scores, anchor_bounds, kth_best, link, nearest_of, prune_floor
from influencegate.findings.views import ViewMatch, _base, search_count, view_bounds, view_descriptors
from influencegate.heap import release_heap

CODE_DIM = 64
#: Images per block of the codes kept in RAM (6 x 64 float16 each: 96 MiB per block, above glibc's largest
#: mmap threshold, so a block never pins the heap).
CODE_BLOCK = 1 << 17
#: Low DCT frequencies per axis kept for the bound of the check (views.view_bounds).
BOUND_LOW = 6
#: Added to the bound before comparing it with the floor: the float16 stored low coefficients (relative error
#: <= 2^-11 of a unit vector: < 5e-4 per product) and the float32 residual norms (sqrt of a difference of
#: sums near 1: < 5e-4 each) stay well inside it.
BOUND_MARGIN = 5e-3


class ViewIndex:
    """Streaming index of image codes, stored thumbnails and anchor views (module docstring)."""

    def __init__(self, match: ViewMatch = ViewMatch(), dim: int = CODE_DIM, seed: int = 0,
                 path: str | os.PathLike | None = None, append: bool = False, search_bounds: bool = False) -> None:
        self.match, self.dim, self.seed = match, int(dim), int(seed)
        self._anchor_windows = match.windows()[1]
        self._code_windows = code_windows(match)
        # the windows of one view pass: the anchors (stored), then the code windows that are not anchors (corners)
        self._view_windows = self._anchor_windows + [w for w in self._code_windows if w not in self._anchor_windows]
        self._code_rows = [self._view_windows.index(w) for w in self._code_windows]
        self._codes: list[np.ndarray] = []
        self._proj: torch.Tensor | None = None
        self._shape: tuple[int, ...] | None = None
        self._anchor_shape: tuple[int, ...] | None = None
        if path is None:
            handle, path = tempfile.mkstemp(suffix=".thumbs")
            os.close(handle)
        self.path, self.anchor_path, self.low_path = str(path), str(path) + ".anchors", str(path) + ".low"
        mode = "ab" if append else "wb"  # append: reopen()
        self._file, self._anchor_file = open(self.path, mode), open(self.anchor_path, mode)
        self._low_file = open(self.low_path, mode)
        self._low_shape: tuple[int, ...] | None = None
        self.search_path = str(path) + ".search" if search_bounds else None
        self._search_file = open(self.search_path, mode) if self.search_path else None
        self._search_shape: tuple[int, ...] | None = None
        self.count, self._batches = 0, 0

    @classmethod
    def reopen(cls, match: ViewMatch, path: str, codes: np.ndarray, shapes: dict[str, tuple[int, ...]],
               dim: int = CODE_DIM, seed: int = 0) -> "ViewIndex":
        """The index an earlier one left at `path` (closed by `release`, not deleted) with its N x A x dim codes and
        `shapes` (`shapes()`; with "search", its search views' bounds are stored too); `add` appends."""
        index = cls(match, dim, seed, path, append=True, search_bounds="search" in shapes)
        index._store_codes(np.asarray(codes, dtype=np.float16))
        index.count = len(codes)
        index._shape, index._anchor_shape, index._low_shape = (tuple(shapes[k]) for k in ("thumbs", "anchors", "low"))
        index._search_shape = tuple(shapes["search"]) if "search" in shapes else None
        return index

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Each image's stored shapes: thumbnail (K x b x b), anchor views (A' x K D^2), their bounds and (with
        search_bounds) the search views' bounds."""
        search = {"search": self._search_shape} if self.search_path else {}
        return {"thumbs": self._shape, "anchors": self._anchor_shape, "low": self._low_shape, **search}

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
        thumbs = (base - lo).div_(span).mul_(255).round_().to(torch.uint8).numpy()  # in place: fewer fresh pages
        self._file.write(thumbs.tobytes())
        # anchors of the stored (quantised) thumbnails: exactly what the check compares against
        stored_thumbs = torch.from_numpy(thumbs).float() / 255.0
        anchors, coarse = self._anchor_and_code_views(stored_thumbs)
        self._anchor_shape = tuple(anchors.shape[1:])
        stored = anchors.to(torch.float16)
        self._anchor_file.write(stored.numpy().tobytes())
        low = anchor_bounds(stored, int(base.shape[1]), BOUND_LOW)
        self._low_shape = tuple(low.shape[1:])
        self._low_file.write(low.tobytes())
        if self._search_file is not None:
            bounds = self._search_bounds(stored_thumbs).to(torch.float16)
            self._search_shape = tuple(bounds.shape[1:])
            self._search_file.write(bounds.numpy().tobytes())
        if self._proj is None:
            gen = torch.Generator().manual_seed(self.seed)
            self._proj = torch.randn(anchors.shape[-1], self.dim, generator=gen)
        codes = torch.nn.functional.normalize(coarse @ self._proj, dim=-1)
        self._store_codes(codes.to(torch.float16).numpy())
        self.count += len(x)
        self._batches += 1
        if self._batches % RELEASE_EVERY == 0:  # a trim costs its walk and the next batch's page faults
            release_heap()

    def _anchor_and_code_views(self, thumbs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(anchor views M x A' x K D^2 as the check stores them (mirrored ones after, with flip), the views the
        codes are projected from: M x len(code_windows) x K D^2, in code_windows' order). Without a separate
        ViewMatch.code_blur both come from one view_descriptors pass over the anchors and the corner windows."""
        blur = self.match.code_blur
        if blur is not None and blur != self.match.blur:
            anchors = view_descriptors(thumbs, self.match, only=self._anchor_windows)
            return anchors, view_descriptors(thumbs, replace(self.match, blur=blur, flip=False),
                                             only=self._code_windows)
        views = view_descriptors(thumbs, self.match, only=self._view_windows)
        total, kept = len(self._view_windows), len(self._anchor_windows)
        mirrors = 2 if self.match.flip else 1
        anchors = torch.cat([views[:, f * total:f * total + kept] for f in range(mirrors)], dim=1)
        return anchors, views[:, self._code_rows]

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

    def _float16_codes(self) -> np.ndarray:
        """N x A x dim float16 codes, one array."""
        if not self._codes:
            return np.zeros((0, 1, self.dim), np.float16)
        filled = self.count - CODE_BLOCK * (len(self._codes) - 1)  # rows used in the last block
        return np.concatenate([*self._codes[:-1], self._codes[-1][:filled]])

    def codes(self, dtype: type = np.float32) -> np.ndarray:
        """N x A x dim codes (A code windows, code_windows: the whole image first) as dtype (stored float16)."""
        return self._float16_codes().astype(dtype, copy=False)

    def thumbnails(self, rows: np.ndarray) -> torch.Tensor:
        """The stored K x b x b thumbnails of `rows`, float32 in [0, 1] (each stretched to its own range), read
        through a mapping that gives its pages back (data.mapped), so the file never stays resident."""
        return torch.from_numpy(self._store().read(np.asarray(rows)).astype(np.float32) / 255.0)

    def _store(self) -> MappedArray:
        self._file.flush()
        return MappedArray(self.path, np.uint8, (self.count, *self._shape))

    def _anchors(self) -> MappedArray:
        self._anchor_file.flush()
        return MappedArray(self.anchor_path, np.float16, (self.count, *self._anchor_shape))

    def _lows(self) -> np.ndarray:
        """N x A' x (K BOUND_LOW^2 + 1) float16: the anchors' low-frequency bounds, read into RAM (654 B an image,
        0.65 GB at a million) for the check, which gathers them in random order: through a mapping that gives
        its pages back, each row read was a page fault, a fifth of the check's time at a million images."""
        self._low_file.flush()
        return np.fromfile(self.low_path, dtype=np.float16, count=self.count * int(np.prod(self._low_shape))
                           ).reshape(self.count, *self._low_shape)

    def candidates(self, k: int | None = None, index: str = "faiss-ivf") -> tuple[np.ndarray, np.ndarray]:
        """Candidate pairs of the indexed images (code_candidates): each anchor code's k nearest whole-image codes
        (None: CORNER_ANCHOR_K beside corner codes, CANDIDATE_K without them), each corner code's CORNER_K."""
        corners = (CORNER_K,) * (len(self._view_windows) - len(self._anchor_windows))  # the last codes
        if k is None:
            k = CORNER_ANCHOR_K if corners else CANDIDATE_K
        return code_candidates(self._float16_codes(), k, index, extra_k=corners)  # float16: converted per batch

    def similarity(self, ci: np.ndarray, cj: np.ndarray, block: int = 256,
                   floor: float | None = None) -> np.ndarray:
        """float32 P: view_search.pair_similarity of the pairs (ci, cj), linear in images + pairs. s = max of two
        halves, (search views of one image) . (stored anchors of the other); the halves are sorted by their
        searching image and the images taken in blocks of `block` rows of the thumbnail store, so each image's
        search views (S x K D^2, 105 KiB) are computed once; one batched product per group of rows, each
        image's partners padded to its group's largest count, groups cut so that rows x largest count <=
        pair_scan.PAD_SLOTS (an index hub with thousands of partners gets a group of its own). Memory: block x S views
        (~27 MiB at the defaults) and one buffer of PAD_SLOTS x A' anchors (~75 MiB), reused by every group.

        floor: first the same scan with views.view_bounds (each view's BOUND_LOW^2 lowest DCT frequencies per
        channel plus the norm of the rest: an upper bound of s at 1/7 of the numbers, the stored anchors' part
        precomputed at add()); only the pairs whose bound + BOUND_MARGIN reaches `floor` get the exact s, the
        others keep their bound (< floor, an upper bound of their s). With floor = prune_floor(match) the
        links are exactly those of the exact s (prune_floor)."""
        p = len(ci)
        if p == 0:
            return np.full(0, -2.0, dtype=np.float32)
        if floor is None:
            return self._scan(ci, cj, block, exact=True)
        sims = self._scan(ci, cj, block, exact=False)
        near = np.flatnonzero(sims + BOUND_MARGIN >= floor)
        if len(near):
            sims[near] = self._scan(ci[near], cj[near], block, exact=True)
        return sims

    def _scan(self, ci: np.ndarray, cj: np.ndarray, block: int, exact: bool) -> np.ndarray:
        """float32 P: max over both halves of max over (search view of one image) . (anchor of the other):
        the exact views and stored anchors (exact=True) or their view_bounds (exact=False); pair_scan."""
        if exact:
            plain, search = replace(self.match, flip=False), list(range(search_count(self.match)))

            def own(rows: np.ndarray) -> torch.Tensor:
                return view_descriptors(self.thumbnails(rows), plain, only=search)
            return pair_max_products(ci, cj, self.count, block, own, self._anchors().read, self._anchor_shape)

        def own_bounds(rows: np.ndarray) -> torch.Tensor:
            if self.search_path is None:
                return self._search_bounds(self.thumbnails(rows))
            self._search_file.flush()
            stored = MappedArray(self.search_path, np.float16, (self.count, *self._search_shape))
            return torch.from_numpy(stored.read(np.asarray(rows)).astype(np.float32))
        return pair_max_products(ci, cj, self.count, block, own_bounds, torch.from_numpy(self._lows()), self._low_shape)

    def pairs(self, k: int | None = None, index: str = "faiss-ivf") -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(i, j, a, candidates): the linked pairs among the candidates with their score (aligned_scores), by
        ViewMatch's view similarity (proposes), aligned check (decides) and rule (the relative rule's k-th
        best view similarity is taken among each image's candidates), and how many candidates were checked."""
        ci, cj = self.candidates(k, index)
        floor = min(self.match.propose, self.match.nearest)  # exact wherever a pair may be proposed or nearest
        ok, aligned = self.decide(ci, cj, self.similarity(ci, cj, floor=floor))
        return ci[ok], cj[ok], aligned[ok], len(ci)

    def decide(self, ci: np.ndarray, cj: np.ndarray, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(linked: bool P, score: float32 P) of the candidate pairs from their view similarities
        `similarity(ci, cj, floor=min(match.propose, match.nearest))` (exact where they may reach it, upper
        bounds elsewhere): the aligned check of the proposed pairs and of each image's nearest candidate below
        propose (view_search.nearest_of, ViewMatch.nearest); then the exact s of the other candidates of the
        images whose link depends on their k-th best (an aligned score in [floor, threshold)) wherever the bound
        reaches
        prune_floor; below it no k-th best changes a link (prune_floor), so the links are those of the exact s
        of every candidate, at the exact views of a few images' candidates instead of all above prune_floor."""
        m = self.match
        aligned = aligned_scores(ci, cj, sims, self.thumbnails, m, nearest_of(ci, cj, sims, m))
        relative = (aligned >= m.floor) & (aligned < m.threshold)
        touched = np.zeros(self.count, dtype=bool)  # images with a relative link (np.isin: seconds at 1M pairs)
        touched[ci[relative]] = touched[cj[relative]] = True
        need = np.flatnonzero((touched[ci] | touched[cj]) & (sims < m.propose)
                              & (sims + BOUND_MARGIN >= prune_floor(m)))
        if len(need):
            sims = sims.copy()
            sims[need] = self._scan(ci[need], cj[need], 256, exact=True)
        return link(ci, cj, aligned, kth_best(ci, cj, sims, self.count, int(m.k)), m), aligned

    def _search_bounds(self, thumbs: torch.Tensor) -> torch.Tensor:
        """B x S x (K BOUND_LOW^2 + 1) float32: views.view_bounds of the search views of stored thumbnails."""
        plain = replace(self.match, flip=False)
        return view_bounds(thumbs, plain, BOUND_LOW, only=list(range(search_count(self.match))))

    def release(self) -> None:
        """Close the thumbnail, anchor and bound files, keeping them (`reopen`)."""
        for handle in filter(None, (self._file, self._anchor_file, self._low_file, self._search_file)):
            handle.close()

    def close(self) -> None:
        """Close and delete the thumbnail, anchor and bound files."""
        self.release()
        for path in (self.path, self.anchor_path, self.low_path, self.search_path):
            if path is not None and os.path.exists(path):
                os.remove(path)


def indexed_view_pairs(batches: Iterable[torch.Tensor | np.ndarray], match: ViewMatch = ViewMatch(),
                       k: int | None = None,
                       index: str = "faiss-ivf") -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One streaming pass over `batches` of images, then `ViewIndex.pairs`: (i, j, s, candidates checked)."""
    idx = ViewIndex(match)
    try:
        for batch in batches:
            idx.add(batch)
        return idx.pairs(k, index)
    finally:
        idx.close()
