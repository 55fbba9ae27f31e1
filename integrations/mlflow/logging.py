"""One MLflow run per audit: params, metrics, scores table, figures, gate decision, Data Docs, Evidently report,
the dataset as an input, and the tags `dataset.name`, `dataset.version`, `gate.status`.

The run is first written to a local run directory (`run_dir`: the decision and the scores survive a tracking
outage), then uploaded with a bounded retry (`upload`). No tracker is hard-coded: when a run is already active
(e.g. the step runs with ZenML's MLflow experiment tracker, which opens one), everything goes into that run;
otherwise a run is opened at the configured tracking URI (default ``sqlite:///mlflow.db``), or
``MLFLOW_TRACKING_URI`` when the config leaves it unset.
"""
from __future__ import annotations

import io
import math
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from influencegate.integrations.mlflow.review import measured, review_items
from influencegate.integrations.mlflow.run_dir import RunRecord, write_run_dir
from influencegate.integrations.mlflow.upload import DEFAULT_RETRY_SECONDS, upload_run_dir
from influencegate.report.run_note import run_name as default_run_name

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "influencegate"
#: Rows of the scores table logged as an MLflow table (scores_table.json, which the UI loads whole into the
#: browser): above it the rows with the highest log_influence; scores.parquet always holds every row.
TABLE_MAX_ROWS = 10_000
#: Where run directories go when none is given (one folder per audit below it).
DEFAULT_RUNS_ROOT = "influencegate_runs"
#: Artifact paths inside the run, one name for one thing (the README's tour lists them).
ARTIFACTS = {
    "scores_parquet": "scores/scores.parquet",
    "scores_table": "scores/scores_table.json",
    "summary": "scores/summary.json",
    "histogram": "figures/log_influence_hist.png",
    "most": "figures/most_influential.png",
    "least": "figures/least_influential.png",
    "embedding_map": "figures/embedding_map_tsne.png",
    "findings_report": "findings/summary.html",
    "misaligned_gallery": "figures/most_misaligned_pairs.png",
    "roc": "figures/misalignment_roc.png",
    "decision": "gate/decision.json",
    "data_docs": "gate/data_docs",
    "evidently": "drift/evidently_report.html",
    "drift": "drift/summary.json",
}


def tracking_uri(configured: str | None = None) -> str:
    """The tracking URI to use: the configured one, else MLFLOW_TRACKING_URI, else sqlite:///mlflow.db."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def new_run_dir(root: str | Path | None = None, label: str = "audit") -> Path:
    """A fresh run directory path under `root` (default DEFAULT_RUNS_ROOT): <UTC time>-<label>-<random>."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", label)[:40]
    return Path(root or DEFAULT_RUNS_ROOT) / f"{stamp}-{label}-{uuid.uuid4().hex[:6]}"


def _params(prefix: str, values: Mapping[str, Any]) -> dict[str, str]:
    return {f"{prefix}.{k}": ("None" if v is None else str(v))[:6000] for k, v in values.items()}


def _metrics(prefix: str, values: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in values.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if not isinstance(value, bool) and not math.isnan(number):
            out[f"{prefix}{key}"] = number
    return out


def _loggable_table(table: pd.DataFrame) -> pd.DataFrame:
    """Plain dtypes for mlflow.log_table (nullable ints -> float, objects -> str or None)."""
    out = table.copy()
    for column in out.columns:
        if str(out[column].dtype) in ("Int64", "Int32", "boolean"):
            out[column] = out[column].astype("float64")
        elif out[column].dtype == object:
            out[column] = out[column].map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    return out


def _parquet(table: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    return buffer.getvalue()


def audit_record(*, scores: pd.DataFrame, summary: Mapping[str, Any], decision: Mapping[str, Any],
                 dataset: Mapping[str, Any], records: pd.DataFrame | None = None,
                 scorer_params: Mapping[str, Any] | None = None, scorer_prefix: str = "scorer",
                 encoder: Mapping[str, Any] | None = None, figures: Mapping[str, Any] | None = None,
                 findings: Mapping[str, Any] | None = None, html: Mapping[str, str | None] | None = None,
                 drift: Mapping[str, Any] | None = None, review: pd.DataFrame | None = None, uri: str | None = None,
                 experiment: str | None = None, run_name: str | None = None,
                 extra_tags: Mapping[str, str] | None = None) -> RunRecord:
    """The MLflow run of one audit, not yet written (see `log_audit` for the arguments)."""
    name, version = str(dataset.get("name")), str(dataset.get("version"))
    tags = {"dataset.name": name, "dataset.version": version, "gate.status": str(decision.get("status")),
            "gate.suite": str((decision.get("suite") or {}).get("name")),
            "gate.suite_hash": str((decision.get("suite") or {}).get("hash")), **(extra_tags or {})}
    params = {**_params(scorer_prefix, scorer_params or {}), **_params("encoder", encoder or {}),
              **_params("dataset", {k: v for k, v in dataset.items()
                                    if k not in ("records", "n_rows", "n_readable", "n_failed", "skipped")}),
              **_params("suite", decision.get("suite") or {})}
    metrics = _metrics("", measured(summary))
    metrics["gate.approved"] = 1.0 if decision.get("approved") else 0.0
    metrics["gate.n_failed"] = float(len(decision.get("failed_expectations") or []))
    metrics["gate.n_expectations"] = float(len(decision.get("expectations") or []))
    for kind, count in (dataset.get("skipped") or {}).items():  # a folder's entries its scan left out
        metrics[f"dataset.skipped.{kind}"] = float(count)
    for column, values in ((drift or {}).get("columns") or {}).items():
        metrics[f"drift.{column}.score"] = float(values.get("drift_score", math.nan))  # a p-value or a distance
        metrics[f"drift.{column}.drifted"] = float(values["drifted"]) if "drifted" in values else math.nan
    artifacts: dict[str, Any] = {ARTIFACTS["scores_parquet"]: _parquet(scores), ARTIFACTS["summary"]: dict(summary),
                                 ARTIFACTS["decision"]: dict(decision)}
    artifacts.update({ARTIFACTS[key]: image for key, image in (figures or {}).items() if image is not None})
    docs = decision.get("data_docs")
    if docs and Path(docs).is_dir():
        artifacts[ARTIFACTS["data_docs"]] = Path(docs)
    shown = scores if len(scores) <= TABLE_MAX_ROWS or "log_influence" not in scores.columns else \
        scores.nlargest(TABLE_MAX_ROWS, "log_influence")
    tags["scores_table.rows"] = f"{len(shown)} of {len(scores)} (all rows: {ARTIFACTS['scores_parquet']})"
    tables = {ARTIFACTS["scores_table"]: _loggable_table(shown)}
    for path, item in (findings or {}).items():
        if isinstance(item, pd.DataFrame):
            if not item.empty:
                tables[path] = _loggable_table(item)
        elif item is not None:
            artifacts[path] = dict(item) if isinstance(item, Mapping) else item
    artifacts.update({ARTIFACTS[key]: page for key, page in (html or {}).items() if page})
    if drift is not None:
        artifacts[ARTIFACTS["drift"]] = dict(drift)
    review_tags, review_artifacts, review_tables = review_items(decision, summary, review)
    source = str(dataset.get("source") or "")
    return RunRecord(
        experiment=experiment or DEFAULT_EXPERIMENT, tracking_uri=tracking_uri(uri),
        run_name=run_name or default_run_name(name, version, bool(decision.get("approved"))),
        tags={**tags, **review_tags}, params=params,
        metrics={k: v for k, v in metrics.items() if not math.isnan(v)},
        artifacts={**artifacts, **review_artifacts}, tables={**tables, **review_tables},
        records=_loggable_table(records) if records is not None else None,
        dataset_input={"name": name, "digest": version,
                       "source": str(Path(source).resolve()) if source and Path(source).exists() else source})


def log_audit(*, run_dir: str | Path | None = None, retry_seconds: float = DEFAULT_RETRY_SECONDS,
              **audit: Any) -> dict[str, str | None]:
    """Log one audit: write its run to `run_dir` (default: a new folder under DEFAULT_RUNS_ROOT), then upload
    it (`upload.upload_run_dir`, bounded by `retry_seconds`; TrackingUnavailable when the store cannot be
    reached). Returns {"run_id", "experiment_id", "tracking_uri", "artifact_uri", "runs_url", "ui_command",
    "status", "run_dir"} (see `review.runs_link`).

    Keyword arguments (`audit_record`): scores, summary, decision (the gate decision; its `data_docs` folder
    is uploaded under gate/data_docs), dataset: {"name", "version", "source"}; records: the dataset's rows
    (logged as the run's input with the version id as digest); figures: {ARTIFACTS key: PIL image} (histogram,
    most, least, embedding_map); findings: {artifact path: PIL image | DataFrame | dict}
    (`influencegate.findings.artifacts`: each finding's figures, tables and texts, logged at their paths;
    empty tables skipped); html: {"findings_report" | "evidently": page}; drift: the Evidently summary;
    review: `influencegate.report.review.review_table` (see `review.review_items`, which also adds the
    description and the gate report); scorer_params with scorer_prefix ("scorer", "ecif"); encoder; uri;
    experiment; run_name (default `run_note.run_name`); extra_tags. None values are skipped; metrics that
    were not measured are left out, each with a `not_measured.<name>` tag.
    """
    record = audit_record(**audit)
    folder = write_run_dir(run_dir or new_run_dir(label=str(audit["dataset"].get("name"))), record)
    return {**upload_run_dir(folder, retry_seconds=retry_seconds), "run_dir": str(folder)}


def approval_runs(dataset_name: str, uri: str | None = None) -> pd.DataFrame:
    """MLflow runs of `dataset_name` across experiments: run_id, dataset.version, gate.status, start_time."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri(uri))
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string=f"tags.`dataset.name` = '{dataset_name}'",
                              order_by=["attributes.start_time DESC"]) if experiments else []
    return pd.DataFrame([{"run_id": r.info.run_id, "dataset.version": r.data.tags.get("dataset.version"),
                          "gate.status": r.data.tags.get("gate.status"),
                          "start_time": pd.Timestamp(r.info.start_time, unit="ms", tz="UTC")} for r in runs],
                        columns=["run_id", "dataset.version", "gate.status", "start_time"])
