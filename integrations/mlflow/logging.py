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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

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
    "traceback_plain": "figures/traceback_plain.png",
    "traceback_relative": "figures/traceback_relative.png",
    "removal_effects": "pairs/removal_effects.csv",
    "removed_pairs": "pairs/removed_pairs.csv",
    "trace_back": "pairs/trace_back.csv",
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


@dataclass(frozen=True)
class AuditRun:
    """Everything one audit logs to MLflow (one run), whichever audit it is.

    scores: the scores table (one row per sample); summary: the flat metrics (statistics, findings, timings);
    decision: the gate decision (its `data_docs` folder is uploaded under gate/data_docs); dataset: the
    version as `DatasetRef.logged()` gives it (settings become `dataset.*` params; n_rows, n_readable,
    n_failed and skipped are counts: skipped become `dataset.skipped.<kind>` metrics); records: the dataset's
    rows (logged as the run's input with the version id as digest); scorer_params under scorer_prefix
    ("scorer", "ecif"); encoder: the encoder's settings; figures: {ARTIFACTS key: PIL image} (histogram, most,
    least, embedding_map, misaligned_gallery, roc, traceback_plain, traceback_relative); tables: {ARTIFACTS
    key: DataFrame} (removal_effects, removed_pairs, trace_back), each written as CSV at its path and logged as
    an MLflow table beside it (.json; empty tables skipped); findings: {artifact path: PIL image | DataFrame | dict}
    (`influencegate.findings.artifacts`; empty tables skipped); html: {"findings_report" | "evidently": page};
    drift: the Evidently summary; review: `influencegate.report.review.review_table` (see
    `review.review_items`, which also adds the description and the gate report); incremental: the report of an
    incremental audit (`incremental_items`; None: a full audit); extra_tags; started_at: when the audit began
    (seconds since the epoch; the run's start in MLflow, so that its Duration is the audit's and not the
    upload's; None: when the run is written).
    None values are skipped; metrics that were not measured are left out, each with a `not_measured.<name>` tag.
    """

    scores: pd.DataFrame
    summary: Mapping[str, Any]
    decision: Mapping[str, Any]
    dataset: Mapping[str, Any]
    records: Optional[pd.DataFrame] = None
    scorer_params: Mapping[str, Any] = field(default_factory=dict)
    scorer_prefix: str = "scorer"
    encoder: Mapping[str, Any] = field(default_factory=dict)
    figures: Mapping[str, Any] = field(default_factory=dict)
    tables: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    findings: Mapping[str, Any] = field(default_factory=dict)
    html: Mapping[str, Optional[str]] = field(default_factory=dict)
    drift: Optional[Mapping[str, Any]] = None
    review: Optional[pd.DataFrame] = None
    incremental: Optional[Mapping[str, Any]] = None
    extra_tags: Mapping[str, str] = field(default_factory=dict)
    started_at: Optional[float] = None


def incremental_items(report: Optional[Mapping[str, Any]]) -> tuple[dict[str, str], dict[str, str], dict[str, float]]:
    """(tags, params, metrics) saying whether and how an audit was incremental. report: the scoring step's
    `scoring_info["resume"]["incremental"]` (`influence.incremental.IncrementalReport` fields, kept_old_scores,
    since), None for a full audit. Tags `audit.incremental` ("true" | "false") and `incremental.old_scores`
    ("kept" | "scored again"); params `incremental.since`, `incremental.tolerance`; metrics
    `incremental.<new | previous | rescored_old | recheck_samples | recheck_spearman>` (counts of samples; the
    Spearman of the re-checked old samples' scores with their previous ones)."""
    if not report:
        return {"audit.incremental": "false"}, {}, {}
    tags = {"audit.incremental": "true",
            "incremental.old_scores": "kept" if report.get("kept_old_scores") else "scored again"}
    params = _params("incremental", {k: report.get(k) for k in ("since", "tolerance")})
    metrics = _metrics("incremental.", {k: report.get(k) for k in ("new", "previous", "rescored_old",
                                                                    "recheck_samples", "recheck_spearman")})
    return tags, params, metrics


@dataclass(frozen=True)
class Tracking:
    """Where and how an audit's run is logged: tracking URI (None: MLFLOW_TRACKING_URI or sqlite:///mlflow.db),
    experiment (None: DEFAULT_EXPERIMENT), run directory (None: a new folder under DEFAULT_RUNS_ROOT) and the
    upload's retry budget in seconds. The run is named by `run_note.run_name`."""

    uri: Optional[str] = None
    experiment: Optional[str] = None
    run_dir: Optional[str] = None
    retry_seconds: float = DEFAULT_RETRY_SECONDS

    @classmethod
    def of(cls, section: Optional[Mapping[str, Any]]) -> "Tracking":
        """From a config's `tracking` section (uri, experiment, run_dir, retry_seconds; None: the defaults)."""
        section = dict(section or {})
        retry = section.get("retry_seconds")
        return cls(uri=section.get("uri"), experiment=section.get("experiment"), run_dir=section.get("run_dir"),
                   retry_seconds=DEFAULT_RETRY_SECONDS if retry is None else float(retry))


def audit_record(run: AuditRun, tracking: Tracking = Tracking()) -> RunRecord:
    """The MLflow run of one audit, not yet written."""
    ended = time.time()  # the audit is over once its record is made; the upload may come much later
    scores, summary, decision, dataset = run.scores, run.summary, run.decision, run.dataset
    name, version = str(dataset.get("name")), str(dataset.get("version"))
    tags = {"dataset.name": name, "dataset.version": version, "gate.status": str(decision.get("status")),
            "gate.suite": str((decision.get("suite") or {}).get("name")),
            "gate.suite_hash": str((decision.get("suite") or {}).get("hash")), **run.extra_tags}
    incremental_tags, incremental_params, incremental_metrics = incremental_items(run.incremental)
    tags.update(incremental_tags)
    params = {**_params(run.scorer_prefix, run.scorer_params), **_params("encoder", run.encoder), **incremental_params,
              **_params("dataset", {k: v for k, v in dataset.items()
                                    if k not in ("records", "n_rows", "n_readable", "n_failed", "skipped")}),
              **_params("suite", decision.get("suite") or {})}
    metrics = {**_metrics("", measured(summary)), **incremental_metrics}
    metrics["gate.approved"] = 1.0 if decision.get("approved") else 0.0
    metrics["gate.n_failed"] = float(len(decision.get("failed_expectations") or []))
    metrics["gate.n_expectations"] = float(len(decision.get("expectations") or []))
    for kind, count in (dataset.get("skipped") or {}).items():  # a folder's entries its scan left out
        metrics[f"dataset.skipped.{kind}"] = float(count)
    for column, values in ((run.drift or {}).get("columns") or {}).items():
        metrics[f"drift.{column}.score"] = float(values.get("drift_score", math.nan))  # a p-value or a distance
        metrics[f"drift.{column}.drifted"] = float(values["drifted"]) if "drifted" in values else math.nan
    artifacts: dict[str, Any] = {ARTIFACTS["scores_parquet"]: _parquet(scores), ARTIFACTS["summary"]: dict(summary),
                                 ARTIFACTS["decision"]: dict(decision)}
    artifacts.update({ARTIFACTS[key]: image for key, image in run.figures.items() if image is not None})
    docs = decision.get("data_docs")
    if docs and Path(docs).is_dir():
        artifacts[ARTIFACTS["data_docs"]] = Path(docs)
    shown = scores if len(scores) <= TABLE_MAX_ROWS or "log_influence" not in scores.columns else \
        scores.nlargest(TABLE_MAX_ROWS, "log_influence")
    tags["scores_table.rows"] = f"{len(shown)} of {len(scores)} (all rows: {ARTIFACTS['scores_parquet']})"
    tables = {ARTIFACTS["scores_table"]: _loggable_table(shown)}
    for key, table in run.tables.items():
        if not table.empty:
            artifacts[ARTIFACTS[key]] = table.to_csv(index=False)
            tables[str(Path(ARTIFACTS[key]).with_suffix(".json"))] = _loggable_table(table)
    for path, item in run.findings.items():
        if isinstance(item, pd.DataFrame):
            if not item.empty:
                tables[path] = _loggable_table(item)
        elif item is not None:
            artifacts[path] = dict(item) if isinstance(item, Mapping) else item
    artifacts.update({ARTIFACTS[key]: page for key, page in run.html.items() if page})
    if run.drift is not None:
        artifacts[ARTIFACTS["drift"]] = dict(run.drift)
    review_tags, review_artifacts, review_tables = review_items(decision, summary, run.review)
    source = str(dataset.get("source") or "")
    return RunRecord(
        experiment=tracking.experiment or DEFAULT_EXPERIMENT, tracking_uri=tracking_uri(tracking.uri),
        run_name=default_run_name(name, version, bool(decision.get("approved"))),
        start_ms=int(1000 * (run.started_at if run.started_at is not None else ended)), end_ms=int(1000 * ended),
        tags={**tags, **review_tags}, params=params,
        metrics={k: v for k, v in metrics.items() if not math.isnan(v)},
        artifacts={**artifacts, **review_artifacts}, tables={**tables, **review_tables},
        records=_loggable_table(run.records) if run.records is not None else None,
        dataset_input={"name": name, "digest": version,
                       "source": str(Path(source).resolve()) if source and Path(source).exists() else source})


def log_audit(run: AuditRun, tracking: Tracking = Tracking()) -> dict[str, str | None]:
    """Log one audit: write its run to `tracking.run_dir` (default: a new folder under DEFAULT_RUNS_ROOT), then
    upload it (`upload.upload_run_dir`, bounded by `tracking.retry_seconds`; TrackingUnavailable when the store
    cannot be reached). Returns {"run_id", "experiment_id", "tracking_uri", "artifact_uri", "runs_url",
    "ui_command", "status", "run_dir"} (see `review.runs_link`)."""
    record = audit_record(run, tracking)
    folder = write_run_dir(tracking.run_dir or new_run_dir(label=str(run.dataset.get("name"))), record)
    return {**upload_run_dir(folder, retry_seconds=tracking.retry_seconds), "run_dir": str(folder)}


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
