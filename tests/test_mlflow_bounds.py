"""What an audit logs to MLflow stays bounded as the dataset grows: the table view is capped, Parquet is whole."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd

from influencegate.integrations.mlflow.logging import ARTIFACTS, TABLE_MAX_ROWS, AuditRun, audit_record


def _record(n: int):
    scores = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)],
                           "log_influence": np.random.default_rng(0).normal(size=n)})
    return scores, audit_record(AuditRun(scores=scores, summary={}, decision={"approved": True},
                                         dataset={"name": "d", "version": "v"}))


def test_large_scores_table_view_keeps_the_top_rows_and_parquet_keeps_all() -> None:
    scores, record = _record(TABLE_MAX_ROWS + 2500)
    shown = record.tables[ARTIFACTS["scores_table"]]
    assert len(shown) == TABLE_MAX_ROWS
    assert shown["log_influence"].min() >= scores["log_influence"].nlargest(TABLE_MAX_ROWS).min()
    assert record.tags["scores_table.rows"].startswith(f"{TABLE_MAX_ROWS} of {TABLE_MAX_ROWS + 2500}")
    whole = pd.read_parquet(io.BytesIO(record.artifacts[ARTIFACTS["scores_parquet"]]))
    assert len(whole) == TABLE_MAX_ROWS + 2500


def test_small_scores_table_is_logged_whole() -> None:
    scores, record = _record(50)
    assert len(record.tables[ARTIFACTS["scores_table"]]) == 50
    assert record.tags["scores_table.rows"].startswith("50 of 50")
