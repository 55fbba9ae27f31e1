"""The check's scan of candidate pairs (duplicate_index.ViewIndex.similarity, issue 14): for every pair (i, j)
the largest product between one image's own vectors (its search views, or their low-frequency bounds, computed
once per image) and the other image's stored vectors (its anchor views or their bounds), taken both ways.

Linear in images + pairs: the pair halves are grouped by their searching image, the images taken `block` at a
time, and one batched product computed per group of images, each image's partners padded to the group's
largest count.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from influencegate.heap import release_heap

#: Padded partner slots per batched product (images of a group x their largest partner count).
PAD_SLOTS = 8192
#: Blocks between two heap releases (heap.release_heap: ~6 ms a call, a sixteenth of a block's work at the
#: defaults when called every block).
RELEASE_EVERY = 8


def pair_max_products(ci: np.ndarray, cj: np.ndarray, n: int, block: int,
                      own: Callable[[np.ndarray], torch.Tensor],
                      partners: torch.Tensor | Callable[[np.ndarray], np.ndarray],
                      partner_shape: tuple[int, ...]) -> np.ndarray:
    """float32 P: for each pair (ci[p], cj[p]) of images in [0, n), max(h(ci, cj), h(cj, ci)) with
    h(a, b) = max over (u in own([a]), v in partners[b]) of u . v.

    own(rows): float32 B x S x F tensor, the vectors of each searching image (called once per image, `block`
    rows at a time); partners: the stored vectors of every image, an n x A x F tensor in RAM (float32 or
    float16) or a function rows -> H x A x F array (any float dtype; read from disk), partner_shape = (A, F).
    Memory: block x S x F own vectors and one float32 buffer of PAD_SLOTS x A x F (_PaddedGather), reused by
    every group (a hub image with more partners than PAD_SLOTS gets a larger one)."""
    p = len(ci)
    if p == 0:
        return np.zeros(0, dtype=np.float32)
    own_rows, other = np.concatenate([ci, cj]), np.concatenate([cj, ci])
    # halves by searching image; the images by their partner count within each block of `block` of them
    # (ids in order otherwise): a group padded to its largest count then holds 1.3x the real slots instead of
    # 2.2x (100k synthetic images). The key, below (n / block + 1) x (most partners + 1) x n, fits int64 to
    # ~10^8 images
    count = np.bincount(own_rows, minlength=n)
    row_block = (np.cumsum(count > 0) - 1) // block
    key = (row_block[own_rows] * (int(count.max()) + 1) + count[own_rows]) * n + own_rows
    order = np.argsort(key, kind="stable")
    del key, row_block, count
    own_rows, other = own_rows[order], other[order]
    first = np.ones(len(own_rows), dtype=bool)
    first[1:] = own_rows[1:] != own_rows[:-1]
    starts = np.flatnonzero(first)  # each searching image's run of halves
    rows, counts = own_rows[starts], np.diff(np.append(starts, len(own_rows)))
    del first, own_rows
    halves = np.empty(2 * p, dtype=np.float32)
    gather = _PaddedGather(partners, partner_shape)
    for b0 in range(0, len(rows), block):
        b1 = min(b0 + block, len(rows))
        views = own(rows[b0:b1])  # B x S x F
        for r0, r1 in _row_groups(counts[b0:b1], PAD_SLOTS):
            r0, r1 = b0 + r0, b0 + r1
            lo, hi = starts[r0], starts[r1 - 1] + counts[r1 - 1]
            count = counts[r0:r1]
            most = int(count.max())
            # each half's slot in the padded R x most layout: its image's row x most + its place among them
            at = np.arange(lo, hi) + np.repeat(np.arange(r1 - r0) * most - starts[r0:r1], count)
            slot_rows = np.zeros((r1 - r0) * most, dtype=np.int64)  # padding slots: image 0, never read back
            slot_rows[at] = other[lo:hi]
            flat = gather(slot_rows).view(r1 - r0, -1, partner_shape[-1])  # R x (most x A) x F
            # R x (most x A) x S products, their max over the last (contiguous) axis: the searching views
            best = torch.bmm(flat, views[r0 - b0:r1 - b0].transpose(1, 2)).amax(dim=2)
            halves[order[lo:hi]] = best.view(len(slot_rows), -1).amax(dim=1).numpy()[at]
        if (b0 // block) % RELEASE_EVERY == RELEASE_EVERY - 1:
            release_heap()
    return np.maximum(halves[:p], halves[p:])


class _PaddedGather:
    """The stored vectors of given rows, written into one float32 buffer reused by every group (fresh arrays of a
    different size per group fragmented the heap: RSS grew with N), grown only for a hub image alone above
    PAD_SLOTS. partners: an n x A x F tensor in RAM, gathered by one index_select straight into the buffer
    (float16 ones into a second reused buffer, then converted: half the RAM of float32 and no slower), or a
    function rows -> H x A x F array (any float dtype), converted. The gather of a row-indexed numpy array
    then a scatter into the padded slots (before session 19) took half the scan's time."""

    def __init__(self, partners: torch.Tensor | Callable[[np.ndarray], np.ndarray],
                 partner_shape: tuple[int, ...]) -> None:
        self.partners, self.shape = partners, tuple(partner_shape)
        self.per_row = int(np.prod(self.shape))
        self.buffer = torch.zeros(0)
        self.stage = torch.zeros(0, dtype=partners.dtype if isinstance(partners, torch.Tensor) else torch.float32)

    def __call__(self, rows: np.ndarray) -> torch.Tensor:
        """float32 len(rows) x A x F, a view of the buffer (valid until the next call)."""
        size = len(rows) * self.per_row
        if size > self.buffer.numel():
            self.buffer = torch.zeros(max(size, PAD_SLOTS * self.per_row))
        out = self.buffer[:size].view(len(rows), *self.shape)
        if not isinstance(self.partners, torch.Tensor):
            out.copy_(torch.from_numpy(np.asarray(self.partners(rows), dtype=np.float32)))
        elif self.partners.dtype == torch.float32:
            torch.index_select(self.partners, 0, torch.from_numpy(rows), out=out)
        else:
            if size > self.stage.numel():
                self.stage = torch.zeros(self.buffer.numel(), dtype=self.partners.dtype)
            staged = self.stage[:size].view(len(rows), *self.shape)
            torch.index_select(self.partners, 0, torch.from_numpy(rows), out=staged)
            out.copy_(staged)
        return out


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
