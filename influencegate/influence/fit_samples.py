"""Which samples fit the curvature: a share of the dataset spread evenly over it (InfluenceConfig.fit_draws).

Under the default rule the curvature is fitted on all K draws of n_fit samples (InfluenceConfig.curvature_samples)
rather than on the first draws of every sample. The samples are spread evenly over the dataset's order, so a
dataset stored class by class or shard by shard is covered from end to end, and the choice is deterministic
(the same dataset gives the same fit). A process of several (torchrun) and an appended version take the
same share of their own samples, so the curvature keeps one density of fitted samples over the whole dataset.
"""
from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset, Subset


def spread_indices(length: int, count: int) -> list[int]:
    """`count` distinct indices of range(length), evenly spread and both ends included when count >= 2
    (every (length - 1) / (count - 1)-th, rounded); all of them when count >= length."""
    if count >= length:
        return list(range(length))
    if count <= 0:
        return []
    return np.linspace(0, length - 1, count).round().astype(int).tolist()


def share_count(share: float, length: int) -> int:
    """The number of a part's `length` samples that a fitted `share` (0 < share <= 1) of samples asks for:
    rounded, and at least one of a non-empty part."""
    return min(length, max(1 if length else 0, round(share * length)))


def fitted_subset(dataset: Dataset, count: int) -> Dataset:
    """`dataset` itself when `count` covers it, else its `count` evenly spread samples (a torch Subset)."""
    return dataset if count >= len(dataset) else Subset(dataset, spread_indices(len(dataset), count))
