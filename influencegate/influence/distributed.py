"""Multi-process scoring with torch.distributed (``torchrun --nproc_per_node=G ...``).

Every process (rank) takes a contiguous part of the samples. After each fitting pass the sums and counts of
all ranks are gathered and merged in rank order, so every rank ends with the fit of all the samples; each
rank then scores its own part and the parts are gathered back in dataset order. The table equals a
single-process run up to the float rounding of the sums' order. Backends: gloo on CPU, nccl on CUDA with one
GPU per rank (LOCAL_RANK).
"""
from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from influencegate.influence.curvature import LayerCurvature
from influencegate.influence.scorer import InfluenceScorer
from influencegate.influence.table import scores_table


def launched_with_ranks() -> bool:
    """Whether a launcher (torchrun) started this process as one of several (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str) -> bool:
    """Join the process group that torchrun describes in the environment, once; on CUDA pin this rank to
    GPU LOCAL_RANK. False when the process runs alone."""
    if not launched_with_ranks():
        return False
    if not dist.is_initialized():
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return True


def rank_part(sample_ids: list[str], rank: int, world: int) -> list[str]:
    """The contiguous part `rank` of `world` parts of the ids (sizes differ by at most one)."""
    n = len(sample_ids)
    return sample_ids[rank * n // world:(rank + 1) * n // world]


def _on_cpu(sums: Any) -> Any:
    """A shallow copy of a FactorSums / LayerCurvature with its tensors on the CPU (ranks may sit on
    different GPUs; the merged fit is used from the CPU or moved per batch)."""
    out = copy.copy(sums)
    for key, value in vars(sums).items():
        if isinstance(value, torch.Tensor):
            setattr(out, key, value.cpu())
    if isinstance(out, LayerCurvature):
        out._cast_cache = {}
    return out


@dataclass(frozen=True)
class Ranks:
    """This process's place in the default process group: (rank 0 of 1) when it runs alone."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> "Ranks":
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order (picklable values)."""
        if self.world == 1:
            return [value]
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, value)
        return gathered

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def on_first(self, work: Callable[[], Any]) -> Any:
        """Run `work` on rank 0 only and give every rank its result; if it fails, every rank raises (a
        ValueError stays a ValueError, so that user errors read the same on each rank) instead of waiting."""
        outcome: tuple[str, Any] = ("ok", None)
        if self.rank == 0:
            try:
                outcome = ("ok", work())
            except Exception as exc:
                if self.world == 1:
                    raise
                outcome = ("value" if isinstance(exc, ValueError) else "error", str(exc))
        kind, value = self.gather(outcome)[0]
        if kind == "value":
            raise ValueError(value)
        if kind == "error":
            raise RuntimeError(f"rank 0 failed: {value}")
        return value


class ProcessGroupReducer:
    """The ``scorer.Reducer`` of the initialised default process group."""

    def __init__(self) -> None:
        self.ranks = Ranks.current()

    def total(self, count: int) -> int:
        return int(sum(self.ranks.gather(int(count))))

    def merged(self, parts: dict[str, Any]) -> dict[str, Any]:
        gathered = self.ranks.gather({name: _on_cpu(value) for name, value in parts.items()})
        merged = gathered[0]
        for other in gathered[1:]:
            for name, value in merged.items():
                value.merge(other[name])
        return merged


def fit_on_ranks(scorer: InfluenceScorer, dataset: Any, ranks: Ranks) -> Any:
    """Fit `scorer` on all of `dataset`, each rank passing over its `rank_part` only (the plain fit when
    alone); returns this rank's part as a dataset."""
    if ranks.world == 1:
        scorer.fit(dataset)
        return dataset
    ids = [str(s) for s in dataset.sample_ids]
    if len(ids) < ranks.world:
        raise ValueError(f"{len(ids)} readable samples cannot be split over {ranks.world} processes")
    part = dataset.subset(rank_part(ids, ranks.rank, ranks.world))
    scorer.fit(part, ProcessGroupReducer())
    return part


def score_distributed(scorer: InfluenceScorer, dataset: Any) -> pd.DataFrame:
    """Fit and score `dataset` across the initialised process group; every rank returns the whole table.

    Every rank passes the same dataset (readable samples in `sample_ids`, all rows in `records`) and a scorer
    built from the same encoder and config; each fits and scores its `rank_part` only.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("score_distributed needs an initialised torch.distributed process group "
                           "(launch with torchrun; influence.distributed.init_from_env joins it)")
    ranks = Ranks.current()
    part = fit_on_ranks(scorer, dataset, ranks)
    order, influence = scorer.influence(part)
    gathered = ranks.gather((order, influence))
    all_ids = [sid for order_of_rank, _ in gathered for sid in order_of_rank]
    return scores_table(all_ids, np.concatenate([values for _, values in gathered]), getattr(dataset, "records", None))
