"""The image audit's workflow: the encoder (loaded and checked, or pretrained), the Influence-SSL scores of a
dataset version, and its findings.

Steps, pipelines and the CLI call these (never each other), so a table in a parquet file, in MLflow and in the
gate is computed once, the same way. Pure core (torch, numpy, pandas).
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from influencegate import models
from influencegate.findings.appended import Previous
from influencegate.findings.run import FindingsResult, find_all
from influencegate.influence import InfluenceConfig, InfluenceScorer, score_resumable
from influencegate.influence.distributed import score_distributed
from influencegate.influence.incremental import score_appended
from influencegate.influence.resume import encoder_sha256, load_previous_run, save_finished_run
from influencegate.influence.loading import encode
from influencegate.report.map_layout import placed_layout, tsne_layout
from influencegate.statistics import add_high_influence
from influencegate.workflows import version_state


def check_encoder_input(encoder: Any, dataset: Any) -> None:
    """Run `encoder` on the dataset's first image (1 x C x H x W, no gradient): ValueError naming the shape
    when it cannot take it (a channel or size mismatch), so the mismatch is found before any scoring."""
    if len(dataset) == 0:
        return
    probe = dataset.batch(slice(0, 1))
    try:
        with torch.no_grad():
            encoder.eval()(probe)
    except RuntimeError as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"the encoder cannot take this dataset's images (C x H x W = "
                         f"{' x '.join(map(str, probe.shape[1:]))}): {reason}; set the channels and image size the encoder was trained on "
                         "(--channels, --image-size)") from None


def load_or_pretrain(dataset: Any, checkpoint: str | Path | None = None, method: str | None = "simclr",
                     epochs: int = 20, seed: int = 0, architecture: str = "small_cnn",
                     save_to: str | Path | None = None, progress: bool = True) -> tuple[Any, list[float], float]:
    """(encoder in eval mode, pretraining loss per epoch, pretraining seconds).

    checkpoint: an encoder spec to load (no training; see `influencegate.models.load_encoder`), checked on
    one of the dataset's images (when a dataset is given) before anything else runs. Else `architecture` (see
    `influencegate.models.build_encoder`) is built for the dataset's channels and pretrained with `method`
    ("simclr" | "byol" | "barlow_twins") for `epochs` epochs, and saved to `save_to` when given.
    ValueError for an encoder that cannot take the dataset's images (channels, size).
    """
    if checkpoint:
        encoder = models.load_encoder(str(checkpoint))
        if dataset is not None:
            check_encoder_input(encoder, dataset)
        return encoder, [], 0.0
    if not method:
        raise ValueError("give an encoder checkpoint or a pretraining method (simclr, byol, barlow_twins)")
    arch_kwargs = {"in_channels": int(dataset.image_shape[0])} if architecture == "small_cnn" else {}
    encoder = models.build_encoder(architecture, seed=int(seed), **arch_kwargs)
    result = models.pretrain(encoder, dataset, method=method, epochs=int(epochs), seed=int(seed), progress=progress)
    losses = [float(x) for x in result.losses]
    if save_to:
        meta = {"method": method, "epochs": int(epochs), "seed": int(seed), "dataset": str(dataset.name),
                "dataset_version": str(dataset.version), "losses": losses}
        models.save_encoder(result.encoder, save_to, architecture, arch_kwargs, meta)
    return result.encoder.eval(), losses, float(result.seconds)


def score_dataset(dataset: Any, encoder: Any, config: InfluenceConfig, resume_dir: str | Path | None = None,
                  shard_size: int = 4096, distributed: bool = False,
                  since: str | Path | None = None) -> tuple[pd.DataFrame, float, dict[str, Any]]:
    """(scores table with `is_high_influence`, seconds, info) for an encoder and an InfluenceConfig. info:
    "score_draws" (the draws each score averages; fewer than config.draws when target_stability chose them),
    "predicted_stability" (the pilot's expected between-seed Spearman at that many draws, NaN without a pilot),
    "predicted_stability_q10" (what 9 in 10 of its simulated seed pairs reach there) and, with resume_dir, the
    resume counts.

    resume_dir: keep the fit and the scores shard by shard (`shard_size` samples) there and resume what an
    earlier, interrupted run of the same config, encoder and dataset left (`influence.score_resumable`);
    the info then says how many shards were reused ({} without resume_dir).
    distributed: this process is one rank of an initialised torch.distributed group; the ranks split the
    samples and every rank returns the whole table (`influence.distributed.score_distributed`; with
    resume_dir, a directory every rank shares).
    since: the resume_dir of an earlier version's run (same encoder and config) that this version extends by
    appending: its fit and scores are reused and only the new samples scored (`influence.incremental`); the
    info then carries the incremental report. With resume_dir as well, this version's run is kept there as a
    finished run (the base of the next version). Not under torchrun (ValueError).
    """
    start = time.perf_counter()
    scorer = InfluenceScorer(encoder, config)
    if since is not None:
        if distributed:
            raise ValueError("an incremental audit (since) runs in one process, not under torchrun")
        table, report = score_appended(scorer, dataset, load_previous_run(scorer, str(since)))
        if resume_dir is not None:
            save_finished_run(scorer, table, str(resume_dir), shard_size)
        info = {"incremental": {**asdict(report), "kept_old_scores": report.kept_old_scores}}
    elif resume_dir is not None:  # with or without ranks
        table, info = score_resumable(scorer, dataset, resume_dir, shard_size)
    elif distributed:
        table, info = score_distributed(scorer, dataset), {}
    else:
        table, info = scorer.fit(dataset).score(dataset), {}
    draws = {"score_draws": int(scorer.score_draws),
             "predicted_stability": float(scorer.draw_predictions.get(scorer.score_draws, float("nan"))),
             "predicted_stability_q10": float(scorer.draw_quantiles.get(scorer.score_draws, float("nan")))}
    return add_high_influence(table), time.perf_counter() - start, {**info, **draws}


def encoder_embeddings(dataset: Any, encoder: Any, batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    """M x D float32: the encoder's outputs for the readable samples (one forward pass, no gradient), what the
    findings and the embedding map use."""
    return encode(encoder.to(device).eval(), dataset, batch_size, torch.device(device))


def version_embeddings(dataset: Any, encoder: Any, batch_size: int = 256, device: str = "cpu",
                       resume_dir: str | Path | None = None, since: str | Path | None = None) -> np.ndarray:
    """M x D float32 `encoder_embeddings` of the readable samples. since: the resume directory of the version
    this one appends to: its kept embeddings are reused when the encoder is the same (ValueError otherwise, or
    when a sample was dropped) and only the new samples are encoded (all of them when it kept none).
    resume_dir: keep this version's embeddings there for the next version (workflows.version_state)."""
    ids = list(dataset.sample_ids)
    sha = encoder_sha256(encoder) if since is not None or resume_dir is not None else ""
    kept = version_state.previous_embeddings(str(since), ids, sha) if since is not None else None
    if kept is None:
        embeddings = encoder_embeddings(dataset, encoder, batch_size, device)
    else:
        at, old = kept
        new = np.ones(len(ids), dtype=bool)
        new[at] = False
        fresh = np.flatnonzero(new)
        encoded = (encoder_embeddings(dataset.subset([ids[p] for p in fresh]), encoder, batch_size, device)
                   if len(fresh) else np.zeros((0, old.shape[1]), np.float32))
        embeddings = np.empty((len(ids), old.shape[1]), dtype=np.float32)
        embeddings[at], embeddings[fresh] = old, encoded
    if resume_dir is not None:
        version_state.save_embeddings(str(resume_dir), ids, embeddings, sha)
    return embeddings


def find_issues(dataset: Any, encoder: Any, table: pd.DataFrame, config: Any = None, batch_size: int = 256,
                device: str = "cpu", embeddings: np.ndarray | None = None, resume_dir: str | Path | None = None,
                since: str | Path | None = None) -> FindingsResult:
    """Findings of a scored dataset (`influencegate.findings.find_all`): the encoder's embeddings of the
    readable samples (one forward pass) and their images (with the dataset's normalisation) feed every
    registered finding the config enables.

    config: a `FindingsConfig`, a mapping of its fields, or None for the defaults. embeddings: the M x D
    `encoder_embeddings` when already computed (None: `version_embeddings` here). since: the resume directory of the
    version this one appends to: its findings state is reused and only what the new samples change is
    recomputed (findings.appended; the whole version when it kept none). resume_dir: keep this version's
    findings state there for the next version. Returns a FindingsResult.
    """
    if embeddings is None:
        embeddings = version_embeddings(dataset, encoder, batch_size, device, resume_dir=resume_dir, since=since)
    ids = list(dataset.sample_ids)
    previous = version_state.previous_findings(str(since), ids) if since is not None else None
    if previous is None and resume_dir is not None:
        previous = Previous.empty(len(ids))
    if previous is not None and resume_dir is not None:
        previous.keep_in = str(resume_dir)  # the duplicate index, for the next version (findings.kept_index)
    found = find_all(table, embeddings, dataset.pixels, config, sample_ids=ids, mean=dataset.mean,
                     std=dataset.std, previous=previous)
    if resume_dir is not None:
        version_state.save_findings(str(resume_dir), ids, found.state)
    return found


def version_layout(dataset: Any, table: pd.DataFrame, embeddings: np.ndarray, max_points: int = 5000,
                   resume_dir: str | Path | None = None,
                   since: str | Path | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """The embedding map's layout (positions among the readable samples, xy; report.map_layout). since: the
    previous version's kept map with the new samples placed by their neighbours (no t-SNE). Else, with
    resume_dir, a t-SNE of at most max_points samples (flagged first); None without either (the map lays
    itself out). resume_dir: keep the layout there for the next version."""
    ids = list(dataset.sample_ids)
    kept = version_state.previous_layout(str(since), ids) if since is not None else None
    if kept is not None:
        layout = placed_layout(embeddings, kept[1], kept[2], kept[0])
    elif resume_dir is not None:
        rows = table.set_index(table["sample_id"].astype(str)).loc[ids]
        flagged = np.zeros(len(ids), dtype=bool)
        if "duplicate_group" in rows.columns:
            flagged |= pd.to_numeric(rows["duplicate_group"], errors="coerce").fillna(-1).to_numpy() >= 0
        if "is_outlier" in rows.columns:
            flagged |= rows["is_outlier"].fillna(False).astype(bool).to_numpy()
        layout = tsne_layout(np.asarray(embeddings), flagged, max_points=max_points)
    else:
        return None
    if resume_dir is not None:
        version_state.save_layout(str(resume_dir), ids, layout)
    return layout
