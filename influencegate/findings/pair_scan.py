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
                      own: Callable[[np.ndarray], torch.Tensor], partners: Callable[[np.ndarray], np.ndarray],
                      partner_shape: tuple[int, ...]) -> np.ndarray:
    """float32 P: for each pair (ci[p], cj[p]) of images in [0, n), max(h(ci, cj), h(cj, ci)) with
    h(a, b) = max over (u in own([a]), v in partners([b])) of u . v.

    own(rows): float32 B x S x F tensor, the vectors of each searching image (called once per image, `block`
    rows at a time); partners(rows): H x A x F array (any float dtype), the stored vectors of each partner,
    partner_shape = (A, F). Memory: block x S x F own vectors and one float32 buffer of PAD_SLOTS x A x F,
    reused by every group (a hub image with more partners than PAD_SLOTS gets a larger one)."""
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
    per_slot = int(np.prod(partner_shape))
    buffer = np.zeros(PAD_SLOTS * per_slot, dtype=np.float32)
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
            slots = (r1 - r0) * most
            if slots * per_slot > len(buffer):  # a hub row alone above PAD_SLOTS
                buffer = np.zeros(slots * per_slot, dtype=np.float32)
            # one buffer for every group (padding slots keep stale values; only real slots are read back):
            # fresh arrays of a different size per group fragmented the heap, RSS grew with N
            padded = buffer[:slots * per_slot].reshape(slots, *partner_shape)
            padded[at] = partners(other[lo:hi])
            flat = torch.from_numpy(padded).reshape(r1 - r0, -1, partner_shape[-1])  # R x (most x A) x F
            best = torch.bmm(views[r0 - b0:r1 - b0], flat.transpose(1, 2)).amax(dim=1)
            halves[order[lo:hi]] = best.reshape(slots, -1).amax(dim=1).numpy()[at]
        if (b0 // block) % RELEASE_EVERY == RELEASE_EVERY - 1:
            release_heap()
    return np.maximum(halves[:p], halves[p:])


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
