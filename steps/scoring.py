"""Fit the influence scorer and score every sample; figures of the result."""
from __future__ import annotations

from typing import Annotated, Any, Optional, Tuple

import pandas as pd
from PIL import Image
from torch import nn
from zenml import step

from influencegate import InfluenceConfig
from influencegate.data.storage import redact
from influencegate.report import influence_grids, influence_histogram
from influencegate.statistics import summary_stats
from influencegate.workflows.image_audit import score_dataset
from influencegate.workflows.references import DatasetRef


@step
def score_influence(dataset: DatasetRef, encoder: nn.Module, scorer: Optional[dict[str, Any]] = None,
                    resume_dir: Optional[str] = None, since: Optional[str] = None) -> Tuple[
        Annotated[pd.DataFrame, "influence_scores"],
        Annotated[dict, "score_summary"],
        Annotated[dict, "scoring_info"]]:
    """Influence-SSL scores of `dataset` under `encoder` (`scorer`: InfluenceConfig fields, YAML-style).

    Returns the scores table (docs/design.md section 2, with is_high_influence; `find_issues` adds the findings and
    becomes the run's `influencegate_scores` artifact), its summary statistics
    (`influencegate.statistics.summary_stats`) and {"config": flat scorer config, "seconds": scoring time, "draws": the
    draws each score averages, "predicted_stability": the pilot's expected between-seed Spearman there (NaN
    without one), "predicted_stability_q10": what 9 in 10 of its simulated seed pairs reach there, "resume":
    shards written and reused; with `since`, "incremental": the `influence.incremental.IncrementalReport` fields,
    kept_old_scores and since}. resume_dir: a directory where the fit and the scores are kept shard by shard,
    so that a step that was interrupted resumes there when it is run again (`influence.score_resumable`), and
    that the next version's audit can name as `since`. since: the resume_dir of an earlier version (same
    encoder and scorer) that this one extends by appending: only its new samples are scored
    (`influence.incremental.score_appended`); ValueError when it is not such a run or samples were dropped.
    """
    config = InfluenceConfig.from_dict({"progress": False, **(scorer or {})})
    table, seconds, info = score_dataset(dataset.open(), encoder, config, resume_dir, since=since)
    if since is not None:
        info["incremental"]["since"] = redact(since)
    draws = {"draws": info.pop("score_draws"), **{key: info.pop(key) for key in (
        "predicted_stability", "predicted_stability_q10")}}
    return table, summary_stats(table), {"config": config.to_params(), "seconds": round(seconds, 3), **draws,
                                         "resume": info}


@step
def render_figures(dataset: DatasetRef, scores: pd.DataFrame, k: int = 16) -> Tuple[
        Annotated[Image.Image, "log_influence_histogram"],
        Annotated[Image.Image, "most_influential"],
        Annotated[Image.Image, "least_influential"]]:
    """Histogram of log_influence and grids of the `k` most and least influential images."""
    most, least = influence_grids(scores, dataset.open(), k=k)
    return influence_histogram(scores, title=f"{dataset.name} log_influence"), most, least
