"""What a reviewer opens first in the MLflow UI: the `review` table (flagged rows with thumbnails), the run
description, the one-page gate report with its short summary, `not_measured.<metric>` tags, and the link
that opens the runs view.

Assembled into the run by `logging.log_audit`; the content comes from `influencegate.report`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from influencegate.report.gate_report import decision_html, decision_summary
from influencegate.report.run_note import description, not_measured

#: Artifact paths of what this module logs (the README's tour lists them).
REVIEW_ARTIFACTS = {
    "review": "review/flagged.json",
    "gate_report": "gate/report.html",
    "decision_summary": "gate/decision_summary.json",
}
DESCRIPTION_TAG = "mlflow.note.content"
#: Where `mlflow ui` serves by default.
LOCAL_UI = "http://127.0.0.1:5000"
#: MLflow 3 opens an experiment in its GenAI overview; this query opens the classic ("Model training") runs view.
CLASSIC_VIEW = "workflowType=machine_learning"


def measured(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The summary without the metrics that were not measured (`run_note.not_measured`)."""
    missing = not_measured(summary)
    return {k: v for k, v in summary.items() if k not in missing}


def _table(review: pd.DataFrame) -> pd.DataFrame:
    """The review table with plain JSON types (path None -> "", the image column kept as PIL images)."""
    return review.assign(path=review["path"].map(lambda p: "" if p is None or p != p else str(p)))


def review_items(decision: Mapping[str, Any], summary: Mapping[str, Any],
                 review: pd.DataFrame | None) -> tuple[dict[str, str], dict[str, Any], dict[str, pd.DataFrame]]:
    """What the review adds to the run: (tags, artifacts, tables). Tags: the description (verdict, counts,
    failing expectations, worst flagged ids) and a `not_measured.<metric>` tag saying why for every metric that
    was left out; artifacts: the gate report page and summary; tables: the review table (when it has rows)."""
    tags = {DESCRIPTION_TAG: description(decision, summary, review),
            **{f"not_measured.{k}": v for k, v in not_measured(summary).items()}}
    artifacts = {REVIEW_ARTIFACTS["gate_report"]: decision_html(decision),
                 REVIEW_ARTIFACTS["decision_summary"]: decision_summary(decision)}
    tables = {REVIEW_ARTIFACTS["review"]: _table(review)} if review is not None and len(review) else {}
    return tags, artifacts, tables


def _absolute_sqlite(uri: str) -> str:
    """A sqlite URI with an absolute path (`mlflow ui` may be started from another folder)."""
    path = uri.removeprefix("sqlite:///")
    return uri if path.startswith("/") else f"sqlite:///{Path(path).resolve()}"


def runs_link(uri: str, experiment_id: str, run_id: str) -> dict[str, str | None]:
    """How to open the run in the MLflow UI: {"runs_url", "ui_command"}. An http(s) tracking server:
    `<server>/#/experiments/<id>/runs/<run_id>`, no command; a local store: the `mlflow ui` command that serves
    it and the experiment's classic runs view on the default local address (without `workflowType` MLflow 3
    lands on its GenAI overview, which shows none of the runs)."""
    if uri.startswith(("http://", "https://")):
        return {"runs_url": f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}", "ui_command": None}
    store = _absolute_sqlite(uri) if uri.startswith("sqlite:///") else uri
    return {"runs_url": f"{LOCAL_UI}/#/experiments/{experiment_id}/runs?{CLASSIC_VIEW}",
            "ui_command": f"mlflow ui --backend-store-uri {store}"}
