"""Evidently 0.7 report: a candidate version's score distributions against the last approved version."""
from __future__ import annotations

import math
from html import escape
from typing import Any, Sequence

import pandas as pd

#: Columns compared by default: the score itself and its log (percentiles and ranks are uniform by construction).
DRIFT_COLUMNS = ("log_influence", "influence")


def _scored(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Rows with an influence value, only the compared numeric columns."""
    rows = table[table["influence"].notna()] if "influence" in table.columns else table
    return rows[[c for c in columns if c in rows.columns]].astype(float).reset_index(drop=True)


def no_reference_html(dataset_name: str) -> str:
    """The page shown when no version of the dataset has been approved yet."""
    return (f"<html><body style='font-family:sans-serif'><h3>No approved version of {escape(dataset_name)} yet</h3>"
            "<p>This run is the baseline: later versions are compared with the first approved one.</p></body></html>")


def compare_scores(current: pd.DataFrame, reference: pd.DataFrame | None, *, dataset_name: str,
                   reference_version: str | None = None, current_version: str | None = None,
                   columns: Sequence[str] = DRIFT_COLUMNS, threshold: float = 0.05) -> tuple[str, dict[str, Any]]:
    """(report HTML, summary dict) of the drift of `columns` between two scores tables.

    Tests: Evidently's ValueDrift per column (default method for numeric data: K-S p-value, drift when the
    p-value is below `threshold`). Summary keys: reference_version, current_version, compared (bool),
    columns {name: {method, drift_score, drifted}}, drifted_columns, drift_share, tests (list of checks with
    name, success, observed, threshold, error, in the gate's expectation format).
    With no reference, the summary says compared=False and the HTML explains it.
    """
    summary: dict[str, Any] = {"reference_version": reference_version, "current_version": current_version,
                               "compared": False, "columns": {}, "drifted_columns": 0, "drift_share": 0.0, "tests": []}
    if reference is None or len(reference) == 0:
        return no_reference_html(dataset_name), summary
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    cur, ref = _scored(current, columns), _scored(reference, columns)
    used = [c for c in columns if c in cur.columns and c in ref.columns]
    definition = DataDefinition(numerical_columns=used)
    report = Report([*(ValueDrift(column=c, threshold=threshold) for c in used), DriftedColumnsCount()],
                    include_tests=True,
                    metadata={"dataset": dataset_name, "reference_version": str(reference_version),
                              "current_version": str(current_version)})
    snapshot = report.run(Dataset.from_pandas(cur, data_definition=definition),
                          Dataset.from_pandas(ref, data_definition=definition))
    result = snapshot.dict()
    for metric in result.get("metrics", []):
        config = metric.get("config", {})
        if config.get("type", "").endswith("ValueDrift"):
            score = float(metric.get("value", math.nan))
            summary["columns"][config["column"]] = {"method": config.get("method"), "drift_score": score,
                                                    "drifted": bool(score < float(config.get("threshold", threshold)))}
    for test in result.get("tests", []):
        summary["tests"].append({"name": f"evidently.{test.get('name')}", "table": "scores", "type": "evidently",
                                 "column": None, "threshold": {"p_value_min": threshold},
                                 "observed": test.get("description"), "success": test.get("status") == "SUCCESS",
                                 "error": None, "why": "Evidently drift test against the last approved version."})
    summary["compared"] = True
    summary["drifted_columns"] = sum(c["drifted"] for c in summary["columns"].values())
    summary["drift_share"] = summary["drifted_columns"] / max(len(summary["columns"]), 1)
    return snapshot.get_html_str(as_iframe=False), summary
