"""All findings of one audit in one call, assembled from the registry (findings.registry): the scores table
gains its finding columns (docs/design.md section 2 order), plus the flat metrics the gate checks, the
findings' side tables and plain-language texts; `artifacts` gives their figures and tables by artifact path.

Pure core: the CLI's `score` command and the ZenML steps both call `find_all`, so the columns in a parquet
file, in MLflow and in the gate are computed once, the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from influencegate.findings.image_stats import StatisticsStream
from influencegate.findings.registry import (REGISTRY, TEXTS_PATH, FindingInputs, FindingsConfig, as_config)

__all__ = ["LEADING_COLUMNS", "FindingsConfig", "FindingsResult", "artifacts", "draw_figures", "find_all",
           "finding_tables", "order_columns"]

#: docs/design.md section 2: the columns that lead the scores table, in this order; group columns follow them,
#: then every other record column, then `error` last.
LEADING_COLUMNS = ("sample_id", "path", "influence", "log_influence", "influence_rank", "influence_percentile",
                   "is_high_influence", "is_outlier", "outlier_score", "duplicate_group", "is_duplicate",
                   "duplicate_of")


@dataclass
class FindingsResult:
    """table: the scores table with the enabled findings' columns. metrics: flat floats for the summary table
    and MLflow (each registered finding's metrics; NaN for a finding that did not run). texts: plain language
    per finding that ran. tables: {table short name: DataFrame} of the enabled findings (e.g. fairness,
    duplicate_groups), also readable as attributes (found.fairness). config: what ran. state: {finding: the
    state it leaves for the next version} where `find_all` was given `previous` (findings.appended)."""

    table: pd.DataFrame
    metrics: dict[str, float]
    texts: dict[str, str]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    config: FindingsConfig = field(default_factory=FindingsConfig)
    state: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __getattr__(self, name: str) -> pd.DataFrame:
        tables = self.__dict__.get("tables") or {}
        if name in tables:
            return tables[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or finding table {name!r}")


def order_columns(table: pd.DataFrame, groups: Sequence[str] = ()) -> pd.DataFrame:
    """The table's columns in docs/design.md section 2 order: leading columns, group columns, others, error."""
    lead = [c for c in LEADING_COLUMNS if c in table.columns]
    group_cols = [c for c in groups if c in table.columns and c not in lead]
    rest = [c for c in table.columns if c not in lead and c not in group_cols and c != "error"]
    return table[lead + group_cols + rest + (["error"] if "error" in table.columns else [])]


def find_all(table: pd.DataFrame, embeddings: np.ndarray | None, images: torch.Tensor | np.ndarray | None = None,
             config: FindingsConfig | Mapping[str, Any] | None = None, sample_ids: Sequence[str] | None = None,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
             previous: Any = None) -> FindingsResult:
    """Run every registered finding the config enables on a scores table, in registry order.

    table: the scores table (one row per record; rows with `error` are kept with neutral finding values).
    embeddings: M x D encoder outputs of the readable samples; images: M x C x H x W, same order (exact
    duplicates and image-space checks), normalised by the C-vectors mean/std (None: pixels in [0, 1]);
    sample_ids: the M ids (default: the error-free rows in table order). Columns a finding adds are replaced
    when the table already has them. A finding that is off leaves its metrics NaN, so a suite that checks
    them rejects. previous: a findings.appended.Previous (an appended version: outliers and duplicates
    recompute only what the new samples change; `Previous.empty(M)` for a whole version whose state is kept).
    """
    config = as_config(config)
    out = table.drop(columns=[c for p in REGISTRY.values() for c in p.columns if c in table.columns])
    inputs = FindingInputs(out, embeddings, images, sample_ids, config.groups, mean, std, previous)
    enabled = config.enabled()
    if images is not None and any("image_statistics" in p.wants(config.config(p)) for p in enabled):
        inputs.shared["image_statistics"] = StatisticsStream(mean, std)  # filled by a pass that reads the images
    metrics: dict[str, float] = {}
    texts: dict[str, str] = {}
    state: dict[str, dict[str, Any]] = {}
    for plugin in REGISTRY.values():
        outcome = (plugin.run(replace(inputs, table=out), config.config(plugin)) if plugin in enabled
                   else plugin.skipped(out))
        out = out.join(outcome.columns)
        metrics.update(outcome.metrics)
        if outcome.text:
            texts[plugin.name] = outcome.text
        if outcome.state:
            state[plugin.name] = outcome.state
    out = order_columns(out, config.groups)
    return FindingsResult(out, metrics, texts, finding_tables(out, config), config, state)


def finding_tables(table: pd.DataFrame, config: FindingsConfig | Mapping[str, Any] | None = None
                   ) -> dict[str, pd.DataFrame]:
    """{table short name: DataFrame}: the side tables of the enabled findings, from the scores table with
    their columns (what find_all returns)."""
    config = as_config(config)
    return {name: frame for p in config.enabled() for name, frame in p.derive(table, config.config(p),
                                                                                config.groups).items()}


def draw_figures(table: pd.DataFrame, config: FindingsConfig | Mapping[str, Any] | None = None,
                 images_by_id: Any = None) -> dict[str, Any]:
    """{figure short name: RGB PIL image}: the figures of the enabled findings. images_by_id: sample_id ->
    C x H x W pixels in [0, 1] (report.findings_figures.ImagesById; None draws grey tiles)."""
    config = as_config(config)
    lookup = images_by_id if images_by_id is not None else {}
    return {name: image for p in config.enabled() for name, image in p.draw(table, lookup, config.groups).items()}


def artifacts(found: FindingsResult, images_by_id: Any = None, figures: Mapping[str, Any] | None = None
              ) -> dict[str, Any]:
    """{artifact path: PIL image | DataFrame | dict}: every enabled finding's figures (e.g.
    figures/outliers.png) and tables (e.g. findings/fairness.json) at the paths they declare, plus the texts
    ({finding: text}) at findings/texts.json. What MLflow logs and the ZenML render step returns.
    figures: {short name: image} already drawn (e.g. report.findings_figures.render_all; other names are
    ignored), else drawn here with images_by_id."""
    enabled = found.config.enabled()
    paths = {a.name: a.path for p in enabled for a in (*p.figures, *p.tables)}
    figures = figures if figures is not None else draw_figures(found.table, found.config, images_by_id)
    return {**{paths[name]: image for name, image in figures.items() if name in paths},
            **{paths[name]: frame for name, frame in found.tables.items()}, TEXTS_PATH: dict(found.texts)}
