"""The scores table of docs/design.md section 2, from per-sample influence values."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

SCORE_COLUMNS = ["sample_id", "path", "influence", "log_influence", "influence_rank", "influence_percentile"]


def scores_table(sample_ids: Sequence[str], influence: np.ndarray, records: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per sample: influence (>= 0), its natural log, rank (1 = most influential) and percentile
    (0-100, 100 = most influential).

    `records` (the dataset's rows, with `sample_id`, `path`, other columns and `error`) contributes its
    other columns; records that were not scored (an `error` filled in) stay in the table with NaN
    influence, so nothing is dropped silently. An influence of exactly 0 gets the log of the smallest
    positive double instead of -inf, so that histograms and quantiles stay finite.
    """
    influence = np.asarray(influence, dtype=np.float64)
    if len(sample_ids) != len(influence):
        raise ValueError(f"{len(sample_ids)} sample ids for {len(influence)} influence values")
    table = pd.DataFrame({"sample_id": list(sample_ids), "influence": influence})
    table["log_influence"] = np.log(np.maximum(influence, np.finfo(np.float64).tiny))
    table["influence_rank"] = table["influence"].rank(ascending=False, method="first").astype("Int64")
    n = len(table)
    table["influence_percentile"] = (100.0 * (n - table["influence_rank"].astype(float)) / max(n - 1, 1))
    if records is None:
        table.insert(1, "path", None)
        table["error"] = None
        return table
    extra = records.drop(columns=[c for c in SCORE_COLUMNS if c in records.columns and c not in ("sample_id", "path")])
    merged = extra.merge(table, on="sample_id", how="left")
    if "error" in merged.columns:  # a failed row (a duplicate sample_id among them) never takes a scored row's values
        failed = merged["error"].notna()
        merged.loc[failed, ["influence", "log_influence", "influence_percentile"]] = np.nan
        merged.loc[failed, "influence_rank"] = pd.NA
    if "path" not in merged.columns:
        merged["path"] = None
    if "error" not in merged.columns:
        merged["error"] = None
    unscored = merged["influence"].isna() & merged["error"].isna()
    merged.loc[unscored, "error"] = "not scored"
    rest = [c for c in merged.columns if c not in SCORE_COLUMNS and c != "error"]
    return merged[SCORE_COLUMNS + rest + ["error"]]
