"""Resumable scoring: the fitted curvature and the scores, shard by shard, kept in a directory.

Influence is per sample, so a dataset can be scored in shards of its sample ids and the shards concatenated;
the result equals one `score` call (to float rounding: batches are composed differently). Every finished
step is written atomically (a temporary file, then a rename), so a run that is interrupted, killed or loses
its machine resumes where it stopped when it is called again with the same directory:

    directory/run.json           what the directory belongs to (config, encoder weights, sample ids)
    directory/curvature.pt       the fitted projections and curvature (written after `fit`)
    directory/shard-00000.npz    sample ids and float64 influence of the first shard_size samples, ...

A directory that belongs to another run (a changed config, encoder or dataset) is refused with an error,
never mixed in. Under torchrun the ranks share the directory (see `score_resumable`).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from influencegate.influence.distributed import Ranks, fit_on_ranks
from influencegate.influence.layers import LayerProjector
from influencegate.influence.scorer import InfluenceScorer
from influencegate.influence.table import scores_table

#: Config fields that do not change a score (where it runs, whether it shows progress).
NEUTRAL_FIELDS = ("device", "progress")


def run_fingerprint(scorer: InfluenceScorer, sample_ids: list[str]) -> dict[str, Any]:
    """What a directory's files depend on: the scorer config (less NEUTRAL_FIELDS), the tracked layers, a
    hash of the encoder's weights and of the dataset's readable sample ids, and their count. A callable
    perturbation is known by its name only: changing what it does means a new directory."""
    config = {k: v for k, v in scorer.config.to_params().items() if k not in NEUTRAL_FIELDS}
    weights = hashlib.sha256()
    for name, tensor in sorted(scorer.model.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().to("cpu", torch.float64).numpy().tobytes())
    ids = hashlib.sha256("\x1f".join(sample_ids).encode()).hexdigest()
    return {"config": json.loads(json.dumps(config, default=str)), "layers": list(scorer.layers),
            "encoder_sha256": weights.hexdigest(), "sample_ids_sha256": ids, "n_samples": len(sample_ids)}


def _write_atomically(path: Path, write: Any) -> None:
    """Call write(temporary path), then rename it to `path` (a reader never sees a half-written file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def _claim(directory: Path, fingerprint: dict[str, Any]) -> None:
    """Record the fingerprint in a new directory, or check that an existing one holds the same run."""
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / "run.json"
    if not marker.exists():
        _write_atomically(marker, lambda tmp: tmp.write_text(json.dumps(fingerprint, indent=1)))
        return
    recorded = json.loads(marker.read_text())
    changed = sorted(k for k in set(fingerprint) | set(recorded) if fingerprint.get(k) != recorded.get(k))
    if changed:
        raise ValueError(f"{directory} holds a scoring run with another {', '.join(changed)}; resume with the "
                         f"same config, encoder and dataset, or give a new directory")


def _fit_or_load(scorer: InfluenceScorer, dataset: Any, path: Path, ranks: Ranks) -> bool:
    """Load the fitted state from `path` if rank 0 sees it, else fit (over all ranks) and let rank 0 save
    it. True when it was loaded."""
    if ranks.on_first(path.exists):
        state = torch.load(path, map_location=scorer.device, weights_only=False)
        scorer.fit_draws, scorer.curvature = state["fit_draws"], state["curvature"]
        scorer.projectors = {name: LayerProjector(scorer.layers[name], p_in, p_out)  # bound to this scorer's model
                             for name, (p_in, p_out) in state["projections"].items()}
        return True
    fit_on_ranks(scorer, dataset, ranks)
    state = {"fit_draws": scorer.fit_draws, "curvature": scorer.curvature,
             "projections": {name: (p.p_in, p.p_out) for name, p in scorer.projectors.items()}}
    ranks.on_first(lambda: _write_atomically(path, lambda tmp: torch.save(state, tmp)))
    return False


def _read_shard(path: Path, ids: list[str]) -> np.ndarray:
    """The influence stored in a shard file, after checking that it holds `ids` in order."""
    with np.load(path, allow_pickle=False) as stored:
        if stored["sample_ids"].tolist() != ids:
            raise ValueError(f"{path} holds other sample ids than this shard; give a new directory")
        return stored["influence"]


def _shard(scorer: InfluenceScorer, dataset: Any, ids: list[str], path: Path) -> bool:
    """Make sure the shard file of `ids` exists (score and write it if not); True when it was there."""
    if path.exists():
        _read_shard(path, ids)
        return True
    order, influence = scorer.influence(dataset.subset(ids))
    if order != ids:
        raise RuntimeError(f"the scorer returned the samples of {path.name} in another order")

    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez(handle, sample_ids=np.array(ids), influence=influence)

    _write_atomically(path, write)
    return False


def score_resumable(scorer: InfluenceScorer, dataset: Any, directory: str | Path,
                    shard_size: int = 4096) -> tuple[pd.DataFrame, dict[str, int]]:
    """Fit (or reload the fit) and score `dataset` shard by shard in `directory`, resuming what is there.

    dataset: an ImageDataset (readable samples in `sample_ids`, all rows in `records`). shard_size: samples
    per shard file (>= 1). Inside an initialised torch.distributed group (torchrun) every rank calls it with
    the same arguments and a directory they share: the fit is split over the ranks, shard i is scored by
    rank i mod world, rank 0 writes run.json and curvature.pt, and every rank returns the whole table.
    Returns the scores table of `scorer.score(dataset)` and {"shards", "shards_reused", "fit_reused" (0/1)}.
    """
    if int(shard_size) < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    ranks = Ranks.current()
    directory = Path(directory)
    ids = [str(s) for s in dataset.sample_ids]
    fingerprint = run_fingerprint(scorer, ids)
    ranks.on_first(lambda: _claim(directory, fingerprint))
    fit_reused = _fit_or_load(scorer, dataset, directory / "curvature.pt", ranks)
    chunks = [ids[i:i + int(shard_size)] for i in range(0, len(ids), int(shard_size))]
    paths = [directory / f"shard-{index:05d}.npz" for index in range(len(chunks))]
    mine = range(ranks.rank, len(chunks), ranks.world)
    reused = sum(_shard(scorer, dataset, chunks[i], paths[i])
                 for i in tqdm(mine, desc="score shards", unit="shard", disable=not scorer.config.progress))
    reused = sum(ranks.gather(reused))
    ranks.barrier()  # every shard is on disk
    influence = np.concatenate([_read_shard(path, chunk) for path, chunk in zip(paths, chunks)]) if chunks else np.zeros(0)
    table = scores_table(ids, influence, getattr(dataset, "records", None))
    return table, {"shards": len(chunks), "shards_reused": reused, "fit_reused": int(fit_reused)}
