"""All findings of one audit in one call: the scores table gains its finding columns (docs/design.md section 2
order), plus the flat metrics the gate checks, the fairness table and plain-language texts.

Pure core: the CLI's `score` command and the ZenML `find_issues` step both call `find_all`, so the columns
in a parquet file, in MLflow and in the gate are computed once, the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from influencegate.findings.duplicates import Duplicates
from influencegate.findings.fairness import RESULT_COLUMNS as FAIRNESS_COLUMNS, Fairness
from influencegate.findings.outliers import Outliers

#: docs/design.md section 2: the columns that lead the scores table, in this order; group columns follow them,
#: then every other record column, then `error` last.
LEADING_COLUMNS = ("sample_id", "path", "influence", "log_influence", "influence_rank", "influence_percentile",
                   "is_high_influence", "is_outlier", "outlier_score", "duplicate_group", "is_duplicate",
                   "duplicate_of")


@dataclass
class FindingsConfig:
    """Which findings run and how (YAML-style; every field optional).

    duplicates / outliers: keyword arguments of `Duplicates` / `Outliers`, or None to skip the finding.
    groups: group columns of the dataset's records to audit for fairness (e.g. ["race", "gender"]);
      empty = no fairness audit (its metrics then say 0 columns audited).
    fairness: keyword arguments of `Fairness` other than the columns (top_fraction, top_k, alpha, correction).
    """

    duplicates: dict[str, Any] | None = field(default_factory=dict)
    outliers: dict[str, Any] | None = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)
    fairness: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "FindingsConfig":
        """Build from a (YAML) mapping; unknown keys are an error naming them."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown findings option(s) {unknown}; known: {sorted(known)}")
        if isinstance(values.get("groups"), str):
            values["groups"] = [values["groups"]]
        return cls(**values)


@dataclass
class FindingsResult:
    """table: the scores table with is_outlier, outlier_score, duplicate_group, is_duplicate, duplicate_of.
    metrics: flat floats for the summary table and MLflow (see `find_all`). fairness: the per-group table
    (empty without groups). duplicate_groups: one row per group member. texts: plain language per finding."""

    table: pd.DataFrame
    metrics: dict[str, float]
    fairness: pd.DataFrame
    duplicate_groups: pd.DataFrame
    texts: dict[str, str]


def order_columns(table: pd.DataFrame, groups: Sequence[str] = ()) -> pd.DataFrame:
    """The table's columns in docs/design.md section 2 order: leading columns, group columns, others, error."""
    lead = [c for c in LEADING_COLUMNS if c in table.columns]
    group_cols = [c for c in groups if c in table.columns and c not in lead]
    rest = [c for c in table.columns if c not in lead and c not in group_cols and c != "error"]
    return table[lead + group_cols + rest + (["error"] if "error" in table.columns else [])]


def find_all(table: pd.DataFrame, embeddings: np.ndarray, images: torch.Tensor | np.ndarray | None = None,
             config: FindingsConfig | None = None, sample_ids: Sequence[str] | None = None) -> FindingsResult:
    """Run the configured findings on a scores table.

    table: the scores table (one row per record; rows with `error` are kept with neutral finding values).
    embeddings: M x D encoder outputs of the readable samples; images: M x C x H x W, same order (exact
    duplicates and image-space checks); sample_ids: the M ids (default: the error-free rows in table order).
    metrics: duplicate_fraction (removable copies / examined rows), n_duplicates, duplicate_groups,
    outlier_fraction, n_outliers, fairness_columns_audited, fairness_min_p_value (smallest chi-square p over
    the group columns; 1.0 when none is audited: no disparity was looked for), fairness_max_group_ratio
    (largest top-share / share; 1.0 when none), fairness_flagged (1.0 if any column's p < alpha).
    A finding that was skipped (config None) leaves its metrics NaN, so a suite that checks them rejects.
    """
    config = config or FindingsConfig()
    out = table.drop(columns=[c for c in (*Outliers.columns, *Duplicates.columns) if c in table.columns])
    metrics: dict[str, float] = {}
    texts: dict[str, str] = {}
    duplicate_groups = pd.DataFrame()
    if config.outliers is not None:
        outliers = Outliers(**config.outliers)
        out = out.join(outliers.find(out, embeddings, sample_ids=sample_ids))
        found = outliers.summary()
        metrics.update(outlier_fraction=float(found["outlier_fraction"]), n_outliers=float(found["outliers"]))
        texts["outliers"] = (f"{found['outliers']} of {found['examined']} samples are outliers (combined robust "
                             f"z-score of log_influence and {found['k']}-NN distance above {found['z']:g}).")
    else:
        metrics.update(outlier_fraction=math.nan, n_outliers=math.nan)
    if config.duplicates is not None:
        duplicates = Duplicates(**config.duplicates)
        out = out.join(duplicates.find(out, embeddings, images=images, sample_ids=sample_ids))
        found = duplicates.summary()
        duplicate_groups = duplicates.groups()
        metrics.update(duplicate_fraction=float(found["duplicate_fraction"]), n_duplicates=float(found["duplicates"]),
                       duplicate_groups=float(found["groups"]))
        median = found.get("median_influence_percentile_duplicates")
        texts["duplicates"] = (f"{found['duplicates']} removable copies in {found['groups']} near-duplicate groups "
                               f"({found['duplicate_fraction']:.1%} of {found['examined']} samples)"
                               + (f"; the copies' median influence percentile is {median:.0f}." if median is not None
                                  else ".")
                               + (f" Near-duplicates by embedding cosine only: more than image_max_samples = "
                                  f"{found['image_max_samples']} samples for the pixel comparison."
                                  if found["auto_fallback"] else ""))
    else:
        metrics.update(duplicate_fraction=math.nan, n_duplicates=math.nan, duplicate_groups=math.nan)
    fairness_table = pd.DataFrame(columns=list(FAIRNESS_COLUMNS))
    metrics.update(fairness_columns_audited=float(len(config.groups)), fairness_min_p_value=1.0,
                   fairness_max_group_ratio=1.0, fairness_flagged=0.0)
    if config.groups:
        fairness = Fairness(config.groups, **config.fairness)
        fairness_table = fairness.find(out)
        found = fairness.summary()
        metrics.update(fairness_min_p_value=float(found["min_chi2_p"]),
                       fairness_max_group_ratio=float(np.nanmax(fairness_table["ratio"].to_numpy(dtype=float))),
                       fairness_flagged=float(found["any_flagged"]))
        texts["fairness"] = fairness.text()
    return FindingsResult(order_columns(out, config.groups), metrics, fairness_table, duplicate_groups, texts)
