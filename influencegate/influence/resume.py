"""Resumable scoring: the fitted curvature and the scores, shard by shard, kept in a directory.

Influence is per sample, so a dataset can be scored in shards of its sample ids and the shards concatenated;
the result equals one `score` call (to float rounding: batches are composed differently). Every finished
step is written atomically (`data.storage.write_bytes`: a temporary file and a rename on a local disk, one
upload on an object store), so a run that is interrupted, killed or loses its machine resumes where it
stopped when it is called again with the same directory. The directory is a local path or an fsspec URL
(``s3://bucket/runs/x``, ``gs://...``, ``memory://...``):

    directory/run.json           what the directory belongs to (config, encoder weights, sample ids)
    directory/curvature.pt       the fitted projections and curvature (written after `fit`; see `fit_state`)
    directory/shard-00000.npz    sample ids and float64 influence of the first shard_size samples, ...

Nothing read from the directory can run code: curvature.pt holds tensors, numbers, strings, lists and dicts
only and is loaded with ``torch.load(weights_only=True)``; the shards are loaded with
``np.load(allow_pickle=False)``. A directory that belongs to another run (a changed config, encoder or
dataset), a non-empty directory without run.json, a file in place of the directory, or a curvature.pt or
shard that cannot be read is refused with one ValueError, never mixed in. Under torchrun the ranks share the
directory (see `score_resumable`).
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import warnings
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from influencegate.data import storage
from influencegate.influence.distributed import Ranks, fit_on_ranks
from influencegate.influence.fit_state import fit_state, restore_fit
from influencegate.influence.scorer import InfluenceScorer
from influencegate.influence.table import scores_table

#: Config fields that do not change a score (where it runs, whether it shows progress).
NEUTRAL_FIELDS = ("device", "progress")
#: Config fields added after directories were first kept, at the value that scores as before they existed: a
#: fingerprint leaves them out at that value, so that earlier directories still resume and extend.
LATER_FIELDS = {"estimator": "mean"}


def run_fingerprint(scorer: InfluenceScorer, sample_ids: list[str], shard_size: int) -> dict[str, Any]:
    """What a directory's files depend on: the scorer config (less NEUTRAL_FIELDS), the tracked layers, a
    hash of the encoder's weights and of the dataset's readable sample ids, their count, and the shard size
    (which cuts the ids into shard files). A callable perturbation is known by its name only: changing what
    it does means a new directory."""
    config = {k: v for k, v in scorer.config.to_params().items()
              if k not in NEUTRAL_FIELDS and (k not in LATER_FIELDS or v != LATER_FIELDS[k])}
    ids = hashlib.sha256("\x1f".join(sample_ids).encode()).hexdigest()
    return {"config": json.loads(json.dumps(config, default=str)), "layers": list(scorer.layers),
            "encoder_sha256": encoder_sha256(scorer.model), "sample_ids_sha256": ids, "n_samples": len(sample_ids),
            "shard_size": int(shard_size)}


def encoder_sha256(model: torch.nn.Module) -> str:
    """sha256 (hex) of a model's weights: every state_dict entry's name and float64 values, in name order."""
    weights = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().to("cpu", torch.float64).numpy().tobytes())
    return weights.hexdigest()


def _claim(directory: str, fingerprint: dict[str, Any]) -> None:
    """Record the fingerprint in a new (or empty) directory, or check that an existing one holds the same
    run; before anything else in it is read."""
    shown = storage.redact(directory)
    if storage.is_file(directory):
        raise ValueError(f"resume directory {shown} is a file; give a directory")
    marker = storage.join(directory, "run.json")
    if not storage.exists(marker):
        if storage.is_dir(directory) and next(storage.walk_files(directory), None) is not None:
            raise ValueError(f"{shown} holds files but no run.json: it is not a resume directory of influencegate "
                             f"(or lost its run.json); give a new or empty directory")
        storage.make_dirs(directory)
        storage.write_text(marker, json.dumps(fingerprint, indent=1))
        return
    try:
        recorded = json.loads(storage.read_text(marker))
        if not isinstance(recorded, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{storage.redact(marker)} is not a run record of influencegate ({exc}); give a new "
                         f"directory") from None
    changed = sorted(k for k in set(fingerprint) | set(recorded) if fingerprint.get(k) != recorded.get(k))
    if changed:
        raise ValueError(f"{shown} holds a scoring run with another {', '.join(changed)}; resume with the "
                         f"same config, shard size, encoder and dataset, or give a new directory")


def _load_fit(scorer: InfluenceScorer, location: str) -> None:
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing them
            warnings.simplefilter("ignore")
            state = storage.load_torch(location, map_location="cpu")  # weights_only=True: no code runs
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError:  # a pickle that names code or other classes: refused, never run
        raise ValueError(f"{storage.redact(location)} cannot be loaded as a fit of influencegate: it is not a file "
                         f"of tensors and plain values (damaged, or it names Python objects: refused, nothing in it "
                         f"was run); delete it to fit again") from None
    except Exception as exc:  # truncated, or not a torch file
        reason = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:160]
        raise ValueError(f"{storage.redact(location)} cannot be loaded as a fit of influencegate: truncated or not "
                         f"a torch file ({type(exc).__name__}: {reason}); delete it to fit again") from None
    try:
        restore_fit(scorer, state)
    except Exception as exc:  # a loadable file of another layout, layers or curvature
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"{storage.redact(location)} is not a fit of this run: {reason}; delete it to fit "
                         f"again") from None


def _fit_or_load(scorer: InfluenceScorer, dataset: Any, location: str, ranks: Ranks) -> bool:
    """Load the fitted state from `location` if rank 0 sees it, else fit (over all ranks) and let rank 0
    save it. True when it was loaded."""
    if ranks.on_first(lambda: storage.exists(location)):
        _load_fit(scorer, location)
        return True
    fit_on_ranks(scorer, dataset, ranks)

    def save() -> None:
        buffer = io.BytesIO()
        torch.save(fit_state(scorer), buffer)
        storage.write_bytes(location, buffer.getvalue())

    ranks.on_first(save)
    return False


# -- shards --------------------------------------------------------------------------------------------------
def _read_shard(location: str, ids: list[str], data: bytes | None = None) -> np.ndarray:
    """The influence stored in a shard file (its bytes `data` when read already), after checking that it
    holds `ids` in order."""
    data = storage.read_bytes(location) if data is None else data
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            stored_ids, influence = stored["sample_ids"], stored["influence"]
    except Exception as exc:  # not an npz, truncated, a missing array, an object array
        raise ValueError(f"{storage.redact(location)} is not a readable shard ({type(exc).__name__}: "
                         f"{str(exc)[:200]}); delete it to score the shard again") from None
    if stored_ids.ndim != 1 or stored_ids.tolist() != ids:
        raise ValueError(f"{storage.redact(location)} holds other sample ids than this shard; give a new directory")
    if influence.shape != (len(ids),) or influence.dtype != np.float64:
        raise ValueError(f"{storage.redact(location)} holds no float64 influence per sample; delete it to score "
                         f"the shard again")
    return influence


def _shard(scorer: InfluenceScorer, dataset: Any, ids: list[str], location: str) -> tuple[bool, np.ndarray]:
    """(whether it was there, its influence): the shard file of `ids`, scored and written if absent."""
    try:
        data = storage.read_bytes(location)  # one request on an object store, where exists() may take two
    except FileNotFoundError:
        data = None
    if data is not None:
        return True, _read_shard(location, ids, data)
    order, influence = scorer.influence(dataset.subset(ids))
    if order != ids:
        raise RuntimeError(f"the scorer returned the samples of {storage.basename(location)} in another order")
    _write_shard(location, ids, influence)
    return False, influence


def shard_location(directory: str, index: int) -> str:
    """Where shard `index` of a resume directory lives (shard-00000.npz, ...)."""
    return storage.join(directory, f"shard-{index:05d}.npz")


def _write_shard(location: str, ids: list[str], influence: np.ndarray) -> None:
    """One shard file: the sample ids and their float64 influence (npz, written atomically)."""
    buffer = io.BytesIO()
    np.savez(buffer, sample_ids=np.array(ids), influence=np.asarray(influence, dtype=np.float64))
    storage.write_bytes(location, buffer.getvalue())


def score_resumable(scorer: InfluenceScorer, dataset: Any, directory: str | storage.Location,
                    shard_size: int = 4096) -> tuple[pd.DataFrame, dict[str, int]]:
    """Fit (or reload the fit) and score `dataset` shard by shard in `directory`, resuming what is there.

    directory: a local path or an fsspec URL (``s3://bucket/runs/x``). dataset: an ImageDataset (readable
    samples in `sample_ids`, all rows in `records`). shard_size: samples per shard file (>= 1). Inside an
    initialised torch.distributed group (torchrun) every rank calls it with the same arguments and a
    directory they share: the fit is split over the ranks, shard i is scored by rank i mod world, rank 0
    writes run.json and curvature.pt, and every rank returns the whole table.
    Returns the scores table of `scorer.score(dataset)` and {"shards", "shards_reused", "fit_reused" (0/1)}.
    ValueError for a directory that is not this run's or holds a file that cannot be read (see the module).
    """
    if int(shard_size) < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    ranks = Ranks.current()
    directory = storage.normalise(directory)
    ids = [str(s) for s in dataset.sample_ids]
    fingerprint = run_fingerprint(scorer, ids, int(shard_size))
    ranks.on_first(lambda: _claim(directory, fingerprint))  # before anything in the directory is read
    fit_reused = _fit_or_load(scorer, dataset, storage.join(directory, "curvature.pt"), ranks)
    chunks = [ids[i:i + int(shard_size)] for i in range(0, len(ids), int(shard_size))]
    locations = [shard_location(directory, index) for index in range(len(chunks))]
    mine = range(ranks.rank, len(chunks), ranks.world)
    done: dict[int, np.ndarray] = {}
    reused = 0
    for i in tqdm(mine, desc="score shards", unit="shard", disable=not scorer.config.progress):
        was_there, done[i] = _shard(scorer, dataset, chunks[i], locations[i])
        reused += was_there
    reused = sum(ranks.gather(reused))
    ranks.barrier()  # every shard is stored
    influence = (np.concatenate([done[i] if i in done else _read_shard(locations[i], chunks[i])
                                 for i in range(len(chunks))]) if chunks else np.zeros(0))
    table = scores_table(ids, influence, getattr(dataset, "records", None))
    return table, {"shards": len(chunks), "shards_reused": reused, "fit_reused": int(fit_reused)}


# -- a finished run as the base of an incremental audit -----------------------------------------------------
def load_previous_run(scorer: InfluenceScorer, directory: str | storage.Location) -> pd.DataFrame:
    """Restore `scorer` with the fit kept in a finished resume directory of an earlier version (same config,
    tracked layers and encoder weights; other samples allowed) and return that version's scores
    (`sample_id`, `influence`), for ``influence.incremental.score_appended``. ValueError, one line, for a
    directory that is not a finished run of this encoder and config."""
    directory = storage.normalise(directory)
    shown, marker = storage.redact(directory), storage.join(directory, "run.json")
    if not storage.exists(marker):
        raise ValueError(f"{shown} holds no run.json: not a resume directory of influencegate (--since takes the "
                         f"--resume-dir of an earlier version's score)")
    try:
        recorded = json.loads(storage.read_text(marker))
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        recorded = None
    if not isinstance(recorded, dict):
        raise ValueError(f"{storage.redact(marker)} is not a run record of influencegate")
    mine = run_fingerprint(scorer, [], 1)
    changed = [k for k in ("config", "layers", "encoder_sha256") if recorded.get(k) != mine[k]]
    if changed:
        raise ValueError(f"{shown} was scored with another {', '.join(changed)}; an incremental audit needs the same "
                         f"encoder and config")
    _load_fit(scorer, storage.join(directory, "curvature.pt"))
    size, total = int(recorded.get("shard_size", 0)), int(recorded.get("n_samples", -1))
    ids: list[str] = []
    parts: list[np.ndarray] = []
    for index in range(-(-total // size) if size > 0 and total >= 0 else 0):
        location = shard_location(directory, index)
        try:
            data = storage.read_bytes(location)
            with np.load(io.BytesIO(data), allow_pickle=False) as stored:
                ids.extend(str(s) for s in stored["sample_ids"].tolist())
                parts.append(np.asarray(stored["influence"], dtype=np.float64))
        except FileNotFoundError:
            raise ValueError(f"{shown} is an unfinished run ({storage.basename(location)} is missing); finish it "
                             f"with the same --resume-dir first") from None
        except Exception as exc:  # not an npz, truncated, an object array
            raise ValueError(f"{storage.redact(location)} is not a readable shard ({type(exc).__name__})") from None
    if len(ids) != total:
        raise ValueError(f"{shown} holds {len(ids)} scores for the {total} samples of its run.json")
    return pd.DataFrame({"sample_id": ids, "influence": np.concatenate(parts) if parts else np.zeros(0)})


def save_finished_run(scorer: InfluenceScorer, table: pd.DataFrame, directory: str | storage.Location,
                      shard_size: int = 4096) -> None:
    """Keep a run scored elsewhere (an incremental audit) as a finished resume directory: run.json, the
    scorer's fit and the influence of the table's scored rows in shards, exactly as `score_resumable` leaves
    them, so that the directory can be resumed or be the base of the next version. The directory must be new
    or empty, or hold this same run (ValueError otherwise)."""
    if int(shard_size) < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    directory = storage.normalise(directory)
    scored = table.dropna(subset=["influence"])
    ids = scored["sample_id"].astype(str).tolist()
    _claim(directory, run_fingerprint(scorer, ids, int(shard_size)))
    buffer = io.BytesIO()
    torch.save(fit_state(scorer), buffer)
    storage.write_bytes(storage.join(directory, "curvature.pt"), buffer.getvalue())
    influence = scored["influence"].to_numpy(dtype=np.float64)
    for index, start in enumerate(range(0, len(ids), int(shard_size))):
        _write_shard(shard_location(directory, index), ids[start:start + int(shard_size)],
                     influence[start:start + int(shard_size)])
