"""One MLflow run per audit: params, metrics, scores table, figures, gate decision, Data Docs, Evidently report,
the dataset as an input, and the tags `dataset.name`, `dataset.version`, `gate.status`.

No tracker is hard-coded: when a run is already active (e.g. the step runs with ZenML's MLflow experiment
tracker, which opens one), everything goes into that run; otherwise a run is opened at the configured
tracking URI (default ``sqlite:///mlflow.db``), or ``MLFLOW_TRACKING_URI`` when the config leaves it unset.
"""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import pandas as pd

from influencegate.integrations.mlflow.review import free_run_name, log_review, measured, runs_link
from influencegate.report.run_note import run_name as default_run_name

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "influencegate"
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


@contextlib.contextmanager
def audit_run(uri: str | None = None, experiment: str | None = None, run_name: str | None = None) -> Iterator[Any]:
    """Yield the MLflow run to log into: the active one if any (left open for its owner), else a new run
    at `tracking_uri(uri)` in `experiment` (ended, FAILED on exception)."""
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        yield active
        return
    mlflow.set_tracking_uri(tracking_uri(uri))
    experiment_id = mlflow.set_experiment(experiment or DEFAULT_EXPERIMENT).experiment_id
    with mlflow.start_run(run_name=free_run_name(run_name, experiment_id) if run_name else None) as run:
        yield run


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


def log_dataset_input(records: pd.DataFrame, dataset: Mapping[str, Any]) -> None:
    """Log the dataset version as the active run's MLflow dataset input ("audit"): its rows, named by the
    dataset, digest = the version id. The source is the folder/manifest (a local artifact source) or, for the
    embedded digits, a code source."""
    import warnings

    import mlflow.data
    from mlflow.data.code_dataset_source import CodeDatasetSource

    location = str(dataset.get("source") or "")
    source: Any = (str(Path(location).resolve()) if location and Path(location).exists()
                   else CodeDatasetSource(tags={"influencegate.source": location or str(dataset.get("name"))}))
    # Silenced: MLflow's hints on ambiguous local sources and on integer columns (its schema inference, which
    # runs when the input is logged) are about model signatures and do not apply to an audit input.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        mlflow.log_input(mlflow.data.from_pandas(_loggable_table(records), source=source, name=str(dataset.get("name")),
                                                 digest=str(dataset.get("version"))), context="audit")


def log_audit(*, scores: pd.DataFrame, summary: Mapping[str, Any], decision: Mapping[str, Any],
              dataset: Mapping[str, Any], records: pd.DataFrame | None = None,
              scorer_params: Mapping[str, Any] | None = None, scorer_prefix: str = "scorer",
              encoder: Mapping[str, Any] | None = None, figures: Mapping[str, Any] | None = None,
              findings: Mapping[str, Any] | None = None, html: Mapping[str, str | None] | None = None,
              drift: Mapping[str, Any] | None = None, review: pd.DataFrame | None = None, uri: str | None = None,
              experiment: str | None = None, run_name: str | None = None,
              extra_tags: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """Log one audit; returns {"run_id", "experiment_id", "tracking_uri", "artifact_uri", "runs_url",
    "ui_command"} (see `review.runs_link`).

    dataset: {"name", "version", "source"}; records: the dataset's rows (logged as the run's input with the
    version id as digest); figures: {ARTIFACTS key: PIL image} (histogram, most, least, embedding_map);
    findings: {artifact path: PIL image | DataFrame | dict} (`influencegate.findings.artifacts`: each finding's
    figures, tables and texts, logged at their paths; empty tables skipped);
    html: {"findings_report" | "evidently": page}; decision: the gate decision (its `data_docs` folder is
    uploaded under gate/data_docs); drift: the Evidently summary; review: `influencegate.report.review.review_table`
    (see `review.log_review`, which also writes the description and the gate report); scorer_prefix: the params
    prefix of scorer_params ("scorer", "ecif"). None values are skipped; metrics that were not measured are
    left out, each with a `not_measured.<name>` tag. Default run name: `run_note.run_name`.
    """
    import mlflow
    import mlflow.data

    name, version = str(dataset.get("name")), str(dataset.get("version"))
    with audit_run(uri, experiment, run_name or default_run_name(name, version, bool(decision.get("approved")))) as run:
        mlflow.set_tags({"dataset.name": name, "dataset.version": version, "gate.status": str(decision.get("status")),
                         "gate.suite": str((decision.get("suite") or {}).get("name")),
                         "gate.suite_hash": str((decision.get("suite") or {}).get("hash")), **(extra_tags or {})})
        params = {**_params(scorer_prefix, scorer_params or {}), **_params("encoder", encoder or {}),
                  **_params("dataset", {k: v for k, v in dataset.items()
                                             if k not in ("records", "n_rows", "n_readable", "n_failed")}),
                  **_params("suite", decision.get("suite") or {})}
        mlflow.log_params(params)
        metrics = _metrics("", measured(summary))
        metrics["gate.approved"] = 1.0 if decision.get("approved") else 0.0
        metrics["gate.n_failed"] = float(len(decision.get("failed_expectations") or []))
        metrics["gate.n_expectations"] = float(len(decision.get("expectations") or []))
        for column, values in ((drift or {}).get("columns") or {}).items():
            metrics[f"drift.{column}.score"] = float(values.get("drift_score", math.nan))  # a p-value or a distance
            metrics[f"drift.{column}.drifted"] = float(values["drifted"]) if "drifted" in values else math.nan
        mlflow.log_metrics({k: v for k, v in metrics.items() if not math.isnan(v)})

        with tempfile.TemporaryDirectory(prefix="influencegate_mlflow_") as tmp:
            parquet = Path(tmp) / Path(ARTIFACTS["scores_parquet"]).name
            scores.to_parquet(parquet, index=False)
            mlflow.log_artifact(str(parquet), artifact_path=str(Path(ARTIFACTS["scores_parquet"]).parent))
        mlflow.log_table(_loggable_table(scores), artifact_file=ARTIFACTS["scores_table"])
        mlflow.log_dict(dict(summary), ARTIFACTS["summary"])
        for key, image in (figures or {}).items():
            if image is not None:
                mlflow.log_image(image, artifact_file=ARTIFACTS[key])
        mlflow.log_dict(dict(decision), ARTIFACTS["decision"])
        docs = decision.get("data_docs")
        if docs and Path(docs).is_dir():
            mlflow.log_artifacts(str(docs), artifact_path=ARTIFACTS["data_docs"])
        for path, item in (findings or {}).items():
            if isinstance(item, pd.DataFrame):
                if not item.empty:
                    mlflow.log_table(_loggable_table(item), artifact_file=path)
            elif isinstance(item, Mapping):
                mlflow.log_dict(dict(item), path)
            elif item is not None:
                mlflow.log_image(item, artifact_file=path)
        for key, page in (html or {}).items():
            if page:
                mlflow.log_text(page, ARTIFACTS[key])
        if drift is not None:
            mlflow.log_dict(dict(drift), ARTIFACTS["drift"])
        log_review(decision, summary, review)
        if records is not None:
            log_dataset_input(records, dataset)
        info = run.info
        return {"run_id": info.run_id, "experiment_id": info.experiment_id,
                "tracking_uri": mlflow.get_tracking_uri(), "artifact_uri": info.artifact_uri,
                **runs_link(mlflow.get_tracking_uri(), info.experiment_id, info.run_id)}


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
