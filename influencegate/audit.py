"""Core-level audit helpers: summary statistics of a scores table and the one-call "score a dataset" path.

Pure core (torch, numpy, pandas): the CLI's `score` command and the ZenML steps both call these, so the
numbers in a parquet file, in MLflow and in the gate are computed once, the same way.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

#: Robust z-score of log_influence above which a sample is "high influence" (Iglewicz & Hoaglin's 3.5:
#: on Gaussian data about 1 sample in 2,000 passes it, so a large fraction signals a heavy upper tail).
HIGH_INFLUENCE_Z = 3.5
#: Quantiles of log_influence written into the summary (the gate bounds them; GE 1.24 cannot serialise
#: its own quantile expectation, see docs/design.md section 6).
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def robust_z(values: pd.Series) -> pd.Series:
    """(x - median) / (1.4826 * MAD) over the non-null values; NaN stays NaN; 0 when MAD is 0. Unitless."""
    x = pd.to_numeric(values, errors="coerce").astype(float)
    finite = x[np.isfinite(x)]
    if finite.empty:
        return pd.Series(np.nan, index=x.index)
    median = float(finite.median())
    mad = 1.4826 * float((finite - median).abs().median())
    if mad <= 0:
        return (x - median) * 0.0
    return (x - median) / mad


def add_high_influence(table: pd.DataFrame, z: float = HIGH_INFLUENCE_Z) -> pd.DataFrame:
    """Copy of the scores table with `is_high_influence` (robust z of log_influence > z; False for error rows),
    placed right after `influence_percentile` as in docs/design.md section 2. Kept if already present."""
    table = table.copy()
    if "is_high_influence" in table.columns:
        return table
    flag = (robust_z(table["log_influence"]) > z).fillna(False).astype(bool)
    position = table.columns.get_loc("influence_percentile") + 1 if "influence_percentile" in table.columns else len(table.columns)
    table.insert(position, "is_high_influence", flag)
    return table


def _number(value: Any) -> float:
    """float(value), NaN for None / non-numbers (so a missing statistic is visible, never zero)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def summary_stats(table: pd.DataFrame) -> dict[str, float]:
    """Distribution statistics and counts of a scores table, as a flat dict of floats.

    Keys: n_rows, n_scored, n_errors, error_fraction, n_missing_influence (rows without error and without
    influence), n_negative_influence, n_high_influence, high_influence_fraction (over scored rows),
    influence_mean/std/min/max, log_influence_mean/std/min/max, log_influence_q01 ... _q99 (QUANTILES),
    log_influence_spread (q99 - q50, in nats: log of the ratio of the 99th percentile to the median).
    A statistic that cannot be computed (empty data, missing column) is NaN, so the gate fails closed on it.
    """
    n_rows = len(table)
    error = table["error"] if "error" in table.columns else pd.Series([None] * n_rows, dtype=object)
    has_error = error.notna()
    influence = pd.to_numeric(table["influence"], errors="coerce") if "influence" in table.columns else pd.Series(np.nan, index=table.index)
    if "log_influence" in table.columns:
        log_influence = pd.to_numeric(table["log_influence"], errors="coerce")
    else:
        log_influence = pd.Series(np.nan, index=table.index)
    scored = influence.notna() & ~has_error
    stats: dict[str, float] = {
        "n_rows": float(n_rows),
        "n_scored": float(scored.sum()),
        "n_errors": float(has_error.sum()),
        "error_fraction": float(has_error.mean()) if n_rows else math.nan,
        "n_missing_influence": float((~has_error & influence.isna()).sum()),
        "n_negative_influence": float((influence < 0).sum()),
    }
    if "is_high_influence" in table.columns:
        high = table["is_high_influence"].fillna(False).astype(bool)
    else:
        high = (robust_z(log_influence) > HIGH_INFLUENCE_Z).fillna(False)
    stats["n_high_influence"] = float((high & scored).sum())
    stats["high_influence_fraction"] = stats["n_high_influence"] / stats["n_scored"] if stats["n_scored"] else math.nan
    for name, series in (("influence", influence[scored]), ("log_influence", log_influence[scored])):
        for stat in ("mean", "std", "min", "max"):
            stats[f"{name}_{stat}"] = _number(getattr(series, stat)()) if len(series) else math.nan
    values = log_influence[scored]
    for q in QUANTILES:
        stats[f"log_influence_q{int(round(q * 100)):02d}"] = _number(values.quantile(q)) if len(values) else math.nan
    stats["log_influence_spread"] = stats["log_influence_q99"] - stats["log_influence_q50"]
    return stats


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """The one-row summary table the gate validates: the columns of `summary_stats`."""
    return pd.DataFrame([summary_stats(table)])


def check_encoder_input(encoder: Any, dataset: Any) -> None:
    """Run `encoder` on the dataset's first image (1 x C x H x W, no gradient): ValueError naming the shape
    when it cannot take it (a channel or size mismatch), so the mismatch is found before any scoring."""
    import torch

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
    from influencegate import models

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


def score_dataset(dataset: Any, encoder: Any, config: Any, resume_dir: str | Path | None = None,
                  shard_size: int = 4096, distributed: bool = False,
                  since: str | Path | None = None) -> tuple[pd.DataFrame, float, dict[str, Any]]:
    """(scores table with `is_high_influence`, seconds, info) for an encoder and an InfluenceConfig. info:
    "score_draws" (the draws each score averages; fewer than config.draws when target_stability chose them),
    "predicted_stability" (the pilot's prediction at that many draws, NaN without a pilot) and, with resume_dir,
    the resume counts.

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
    import time

    from influencegate import InfluenceScorer
    from influencegate.influence import score_resumable
    from influencegate.influence.distributed import score_distributed

    start = time.perf_counter()
    scorer = InfluenceScorer(encoder, config)
    if since is not None:
        if distributed:
            raise ValueError("an incremental audit (since) runs in one process, not under torchrun")
        from dataclasses import asdict

        from influencegate.influence.incremental import score_appended
        from influencegate.influence.resume import load_previous_run, save_finished_run

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
             "predicted_stability": float(scorer.draw_predictions.get(scorer.score_draws, float("nan")))}
    return add_high_influence(table), time.perf_counter() - start, {**info, **draws}


def find_issues(dataset: Any, encoder: Any, table: pd.DataFrame, config: Any = None, batch_size: int = 256,
                device: str = "cpu") -> Any:
    """Findings of a scored dataset (`influencegate.findings.find_all`): the encoder's embeddings of the
    readable samples (one forward pass) and their images (with the dataset's normalisation) feed every
    registered finding the config enables.

    config: a `FindingsConfig`, a mapping of its fields, or None for the defaults. Returns a FindingsResult.
    """
    import torch

    from influencegate.findings.run import find_all
    from influencegate.influence.scorer import encode

    model = encoder.to(device).eval()
    embeddings = encode(model, dataset, batch_size, torch.device(device))
    return find_all(table, embeddings, dataset.pixels, config, sample_ids=dataset.sample_ids, mean=dataset.mean,
                    std=dataset.std)


def summary_with_findings(table: pd.DataFrame, findings_metrics: Mapping[str, float]) -> dict[str, float]:
    """`summary_stats` of the table plus the findings' metrics (what the gate's summary table holds)."""
    return {**summary_stats(table), **{k: float(v) for k, v in findings_metrics.items()}}


def version_ref(dataset: Any) -> dict[str, Any]:
    """What identifies a loaded version and its size: name, version, n_rows, n_readable, n_failed, and
    skipped (a folder's entries its scan left out, by kind: `ImageDataset.skipped`)."""
    return {"name": str(dataset.name), "version": str(dataset.version), "n_rows": int(len(dataset.records)),
            "n_readable": int(len(dataset)), "n_failed": int(len(dataset.failed)),
            "skipped": dict(dataset.skipped)}


def same_version(dataset: Any, ref: dict[str, Any], what: str) -> Any:
    """`dataset` when it is the version `ref` names (or `ref` names none); DatasetError naming `what`
    when the data changed since the reference was taken."""
    from influencegate.data import DatasetError

    if ref.get("version") and dataset.version != ref["version"]:
        raise DatasetError(f"{what} changed during the audit: version {dataset.version} instead of {ref['version']}")
    return dataset


def dataset_ref(dataset: Any, image_size: int | None = None, channels: int | None = None,
                workers: int = 0) -> dict[str, Any]:
    """A small, serialisable reference to a loaded dataset version (what ZenML steps pass around instead of
    the images): source, image_size, channels, workers (decoding processes) and `version_ref`'s name,
    version and counts."""
    return {"source": str(dataset.source), "image_size": image_size, "channels": channels, "workers": int(workers),
            **version_ref(dataset)}


def open_dataset(ref: dict[str, Any]) -> Any:
    """Load the dataset version `ref` points to (see `dataset_ref`); raises DatasetError when the data at
    the source no longer has that version id (it changed since the reference was taken)."""
    from influencegate.data import load_images

    dataset = load_images(ref["source"], image_size=ref.get("image_size"), channels=ref.get("channels"),
                          name=ref.get("name"), workers=int(ref.get("workers") or 0))
    return same_version(dataset, ref, f"dataset {ref.get('name')!r} at {ref['source']!r}")
