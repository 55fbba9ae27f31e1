"""Evidently 0.7 report: a candidate version's score distributions against the last approved version."""
from __future__ import annotations

import math
from html import escape
from typing import Any, Sequence

import pandas as pd

#: Columns compared by default: the score itself and its log (percentiles and ranks are uniform by construction).
DRIFT_COLUMNS = ("log_influence", "influence")

P_VALUE, DISTANCE = "p_value", "distance"
#: How each Evidently drift method reads its score, by the method name Evidently reports: a p-value drifts when
#: it is below the threshold, a distance when it is at or above it. Evidently chooses the method by the data
#: (numeric columns: K-S p-value below 1,000 rows, normed Wasserstein distance from 1,000 rows on).
DIRECTIONS = {
    **dict.fromkeys(("K-S p_value", "chi-square p_value", "Z-test p_value", "Anderson-Darling", "Cramer-von Mises",
                     "Epps-Singleton", "Fisher's Exact test", "g_test", "Mann-Whitney U-rank test", "empirical_mmd",
                     "t_test"), P_VALUE),
    **dict.fromkeys(("Wasserstein distance (normed)", "Jensen-Shannon distance", "Kullback-Leibler divergence", "PSI",
                     "Hellinger distance", "Energy-distance", "Total-Variation-Distance"), DISTANCE),
}


def is_drifted(score: float, method: str, threshold: float) -> bool:
    """The drift flag of one column: score < threshold for p-value methods, score >= threshold for distances.
    ValueError for a method whose direction is not known (never guessed)."""
    direction = DIRECTIONS.get(method)
    if direction is None:
        raise ValueError(f"unknown Evidently drift method {method!r}: its direction (p-value or distance) is not known")
    return bool(score < threshold) if direction == P_VALUE else bool(score >= threshold)


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
                   columns: Sequence[str] = DRIFT_COLUMNS, threshold: float | None = None) -> tuple[str, dict[str, Any]]:
    """(report HTML, summary dict) of the drift of `columns` between two scores tables.

    Tests: Evidently's ValueDrift per column, with the method Evidently chooses for the data (numeric: K-S
    p-value below 1,000 rows, normed Wasserstein distance from 1,000 rows on) and that method's own threshold
    (0.05 and 0.1), or `threshold` for every method when given. Each method is read in its own direction
    (`DIRECTIONS`: a p-value drifts below its threshold, a distance at or above it). Summary keys:
    reference_version, current_version, compared (bool), columns {name: {method, direction, drift_score,
    threshold, drifted}}, drifted_columns, drift_share, tests (the gate's check format: name, success,
    observed, threshold, error). With no reference, the summary says compared=False and the HTML explains it.
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
    options = {} if threshold is None else {"threshold": float(threshold)}
    report = Report([*(ValueDrift(column=c, **options) for c in used), DriftedColumnsCount()],
                    include_tests=True,
                    metadata={"dataset": dataset_name, "reference_version": str(reference_version),
                              "current_version": str(current_version)})
    snapshot = report.run(Dataset.from_pandas(cur, data_definition=definition),
                          Dataset.from_pandas(ref, data_definition=definition))
    result = snapshot.dict()
    for metric in result.get("metrics", []):
        config = metric.get("config", {})
        if config.get("type", "").endswith("ValueDrift"):
            score, method, limit = float(metric.get("value", math.nan)), str(config.get("method")), float(config["threshold"])
            drifted = is_drifted(score, method, limit)
            summary["columns"][config["column"]] = {"method": method, "direction": DIRECTIONS[method], "drift_score": score,
                                                    "threshold": limit, "drifted": drifted}
            summary["tests"].append({
                "name": f"evidently.value_drift.{config['column']}", "table": "scores", "type": "evidently",
                "column": config["column"], "threshold": {DIRECTIONS[method]: limit, "method": method},
                "observed": score, "success": not drifted, "error": None,
                "why": f"Evidently drift test against the last approved version ({method}: "
                       + ("a p-value below the threshold" if DIRECTIONS[method] == P_VALUE else
                          "a distance at or above the threshold") + " means drift)."})
    summary["compared"] = True
    summary["drifted_columns"] = sum(c["drifted"] for c in summary["columns"].values())
    summary["drift_share"] = summary["drifted_columns"] / max(len(summary["columns"]), 1)
    return snapshot.get_html_str(as_iframe=False), summary
