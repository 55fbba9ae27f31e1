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


def _all_gather(value: Any) -> list[Any]:
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


class ProcessGroupReducer:
    """The ``scorer.Reducer`` of the initialised default process group."""

    def total(self, count: int) -> int:
        return int(sum(_all_gather(int(count))))

    def merged(self, parts: dict[str, Any]) -> dict[str, Any]:
        gathered = _all_gather({name: _on_cpu(value) for name, value in parts.items()})
        merged = gathered[0]
        for other in gathered[1:]:
            for name, value in merged.items():
                value.merge(other[name])
        return merged


def score_distributed(scorer: InfluenceScorer, dataset: Any) -> pd.DataFrame:
    """Fit and score `dataset` across the initialised process group; every rank returns the whole table.

    Every rank passes the same dataset (readable samples in `sample_ids`, all rows in `records`) and a scorer
    built from the same encoder and config; each fits and scores its `rank_part` only.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("score_distributed needs an initialised torch.distributed process group "
                           "(launch with torchrun; influence.distributed.init_from_env joins it)")
    rank, world = dist.get_rank(), dist.get_world_size()
    ids = [str(s) for s in dataset.sample_ids]
    if len(ids) < world:
        raise ValueError(f"{len(ids)} readable samples cannot be split over {world} processes")
    part = dataset.subset(rank_part(ids, rank, world))
    scorer.fit(part, ProcessGroupReducer())
    order, influence = scorer.influence(part)
    gathered = _all_gather((order, influence))
    all_ids = [sid for order_of_rank, _ in gathered for sid in order_of_rank]
    return scores_table(all_ids, np.concatenate([values for _, values in gathered]), getattr(dataset, "records", None))
