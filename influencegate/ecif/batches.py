"""Fixed, recorded training batches: ECIF needs to know which batch each pair was trained in."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

#: Most pairs handled by one batched operation (bounds memory: embeddings are GROUP_PAIRS x embed_dim).
GROUP_PAIRS = 8192


@dataclass(frozen=True)
class FixedBatches:
    """A partition of pair positions 0..N-1 into batches that stay the same for the whole training.

    members: one int64 tensor of pair positions per batch (positions index the pair arrays, N in all).
    batch_id: (N,) int64, the batch of each position; -1 for a position removed by ``without``.
    seed, batch_size: how the partition was drawn (recorded with a run).
    """

    members: tuple[torch.Tensor, ...]
    batch_id: np.ndarray
    seed: int
    batch_size: int

    def __len__(self) -> int:
        """Number of batches."""
        return len(self.members)

    @property
    def n_pairs(self) -> int:
        """Number of pairs still in some batch."""
        return int(sum(len(m) for m in self.members))

    def groups(self) -> list[torch.Tensor]:
        """The batches stacked by size: int64 tensors nb x B (batches of B pairs, at most GROUP_PAIRS pairs
        per tensor), so that equal-sized batches are processed by one batched operation."""
        out = []
        for size in sorted({len(m) for m in self.members}):
            stack = torch.stack([m for m in self.members if len(m) == size])
            out.extend(torch.split(stack, max(1, GROUP_PAIRS // size)))
        return out

    def without(self, positions: Iterable[int]) -> FixedBatches:
        """The same batches with ``positions`` left out (the others keep their batch; emptied batches go).

        This is the training set of "retrain without these pairs": every other pair meets exactly the
        negatives it met before, minus the removed ones. ValueError for a position not in any batch.
        """
        drop = np.unique(np.asarray(list(positions), dtype=np.int64))
        if drop.size and (drop.min() < 0 or drop.max() >= len(self.batch_id) or (self.batch_id[drop] < 0).any()):
            raise ValueError(f"positions to remove must be pairs of these batches (0..{len(self.batch_id) - 1})")
        keep = torch.from_numpy(~np.isin(np.arange(len(self.batch_id)), drop))
        members = tuple(m[keep[m]] for m in self.members)
        members = tuple(m for m in members if len(m))
        batch_id = np.full(len(self.batch_id), -1, dtype=np.int64)
        for b, m in enumerate(members):
            batch_id[m.numpy()] = b
        return FixedBatches(members, batch_id, self.seed, self.batch_size)


def make_batches(n: int, batch_size: int, seed: int) -> FixedBatches:
    """Split a seeded random permutation of 0..n-1 into ceil(n / batch_size) batches of near-equal size
    (sizes differ by at most one, none above batch_size, except that no batch is left with a single pair),
    so that no pair is dropped.

    ValueError unless n >= 2 and 2 <= batch_size (a contrastive batch needs negatives).
    """
    if n < 2:
        raise ValueError(f"contrastive training needs at least 2 pairs, got {n}")
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2, got {batch_size}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    count = min(-(-n // batch_size), n // 2)
    members = tuple(chunk.clone() for chunk in torch.tensor_split(order, count))
    batch_id = np.empty(n, dtype=np.int64)
    for b, m in enumerate(members):
        batch_id[m.numpy()] = b
    return FixedBatches(members, batch_id, seed, batch_size)
