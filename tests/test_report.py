"""Summary statistics and figures of a scores table (pure core: no MLOps imports)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from PIL import Image

from influencegate.statistics import add_high_influence, robust_z, summary_stats
from influencegate.report import image_grid, influence_grids, influence_histogram


def _table(n: int = 50, errors: int = 5) -> pd.DataFrame:
    influence = np.exp(np.linspace(1.0, 3.0, n))
    influence[-1] = math.exp(30.0)  # one extreme sample
    table = pd.DataFrame({"sample_id": [f"digits/{i:05d}" for i in range(n)], "path": None, "influence": influence,
                          "log_influence": np.log(influence)})
    table["influence_rank"] = table["influence"].rank(ascending=False, method="first").astype("Int64")
    table["influence_percentile"] = 50.0
    table["error"] = None
    table.loc[: errors - 1, ["influence", "log_influence"]] = np.nan
    table.loc[: errors - 1, "error"] = "unreadable"
    return table


def test_summary_stats_counts_and_quantiles() -> None:
    table = add_high_influence(_table())
    assert list(table.columns).index("is_high_influence") == list(table.columns).index("influence_percentile") + 1
    stats = summary_stats(table)
    assert stats["n_rows"] == 50 and stats["n_errors"] == 5 and stats["n_scored"] == 45
    assert stats["error_fraction"] == 0.1 and stats["n_missing_influence"] == 0
    assert stats["n_high_influence"] == 1 and stats["high_influence_fraction"] == 1 / 45
    scored = table["log_influence"].dropna()
    assert stats["log_influence_q50"] == scored.quantile(0.5)
    assert stats["log_influence_spread"] == stats["log_influence_q99"] - stats["log_influence_q50"]


def test_summary_stats_missing_columns_are_nan_not_zero() -> None:
    stats = summary_stats(pd.DataFrame({"sample_id": ["a", "b"]}))
    assert stats["n_rows"] == 2 and math.isnan(stats["log_influence_q50"]) and math.isnan(stats["influence_mean"])
    assert stats["n_missing_influence"] == 2  # no influence at all, and no error explaining why


def test_robust_z_is_zero_for_constant_values() -> None:
    assert (robust_z(pd.Series([1.0, 1.0, 1.0])) == 0).all()


def test_histogram_and_grids(digits) -> None:
    table = _table(n=40, errors=0)
    table["sample_id"] = digits.sample_ids[:40]
    histogram = influence_histogram(add_high_influence(table))
    assert isinstance(histogram, Image.Image) and histogram.size[0] > 300
    most, least = influence_grids(table, digits, k=8)
    assert most.size == least.size and most.mode == "RGB"
    assert np.asarray(most).std() > 10  # real pixels were drawn, not a blank canvas
    empty = image_grid([], [], title="nothing")
    assert empty.size[0] > 0

