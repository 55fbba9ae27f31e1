"""Upload a run directory (`run_dir`) to MLflow, with a bounded retry.

An unreachable tracking store costs at most about `retry_seconds` (default DEFAULT_RETRY_SECONDS), not the
minutes of MLflow's own HTTP retries (7 retries with exponential backoff by default): while uploading, MLflow's
per-request retries and timeout are bounded (HTTP_BOUNDS; a variable the user has set is left alone) and whole
attempts are repeated with a growing pause until the time is up. Then TrackingUnavailable, a one-line message
that names the run directory to `influencegate sync` later.

An upload is resumable: the MLflow run is recorded in upload.json as soon as it exists, and a later upload
(a retry, `sync`) continues that run instead of opening a second one.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from influencegate.data.storage import redact
from influencegate.integrations.mlflow import run_dir as rd
from influencegate.integrations.mlflow.review import runs_link

#: Default time budget of one upload, seconds (all attempts together).
DEFAULT_RETRY_SECONDS = 20.0
#: MLflow's HTTP retry settings while uploading: one retry per request, short backoff.
HTTP_BOUNDS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.2"}
FIRST_PAUSE_SECONDS = 1.0
#: Params, tags and metrics per log_batch call (MLflow accepts at most 100 params and 100 tags per call).
BATCH = 100


class TrackingUnavailable(RuntimeError):
    """The tracking store could not be reached within the retry budget (an infrastructure fault: exit 3).
    The run directory holds everything; `influencegate sync RUN_DIR` uploads it later."""


@contextlib.contextmanager
def bounded_http(seconds: float) -> Iterator[None]:
    """MLflow's HTTP retries bounded for the block: HTTP_BOUNDS and a request timeout of about half of
    `seconds` (at least 1 s), for each variable the environment does not set already."""
    values = {**HTTP_BOUNDS, "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(seconds / 2)))}
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """For a local SQLite store (`sqlite:///PATH`), an exclusive lock on PATH.lock for the block, so that
    concurrent audits neither race to create the store's tables (MLflow's migrations fail when two processes
    run them at once) nor interleave their writes ("database is locked"); other stores serve concurrent
    clients themselves and are not locked."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock_file = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _retryable() -> tuple[type[BaseException], ...]:
    """Errors that mean the store did not answer (or answered with a server fault): worth another attempt."""
    from mlflow.exceptions import MlflowException

    kinds: list[type[BaseException]] = [MlflowException, OSError]
    with contextlib.suppress(ImportError):
        from sqlalchemy.exc import SQLAlchemyError

        kinds.append(SQLAlchemyError)
    return tuple(kinds)


def unique_run_name(name: str, run_id: str) -> str:
    """`name-<first 4 hex of run_id>`: the record's readable name made unique by its run id, with no
    search-then-create race (two runs of the same version, time and verdict differ in their run ids)."""
    return f"{name}-{run_id[:4]}"


def _open_run(client: Any, uri: str, run: Mapping[str, Any], folder: Path) -> Any:
    """The MLflow run to fill: the active run (a ZenML MLflow tracker's, keeping its name), the one an earlier
    upload of this folder started on the same store, else a new one (recorded in upload.json before anything
    is logged). A run of our own is named `unique_run_name(run_name, run_id)` (again on a resumed upload,
    in case the renaming was what the outage interrupted)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    active = mlflow.active_run()
    if active is not None:
        return active
    base = run.get("run_name") or None
    previous = rd.read_upload(folder)
    if previous.get("run_id") and previous.get("tracking_uri") == uri:
        try:
            found = client.get_run(previous["run_id"])
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        else:
            run_id = found.info.run_id
            client.update_run(run_id, status="RUNNING", name=unique_run_name(base, run_id) if base else None)
            return found
    experiment = client.get_experiment_by_name(run["experiment"])
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(run["experiment"])
    created = client.create_run(experiment_id, run_name=base, start_time=run.get("start_ms"))
    run_id = created.info.run_id
    rd.write_upload(folder, {"status": "started", "run_id": run_id, "tracking_uri": uri,
                             "experiment_id": experiment_id})
    if base:
        client.update_run(run_id, name=unique_run_name(base, run_id))
    return created


def _dataset_input(folder: Path, spec: Mapping[str, Any]) -> Any:
    """The run's dataset input (context "audit") from records.parquet: named by the dataset, digest = version."""
    import warnings

    import mlflow.data
    import pandas as pd
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.entities import DatasetInput, InputTag

    source = spec.get("source") or ""
    source_obj: Any = (source if source and Path(source).exists()
                       else CodeDatasetSource(tags={"influencegate.source": source or str(spec.get("name"))}))
    # Silenced: MLflow's schema-inference hints (ambiguous local sources, integer columns) are about model
    # signatures and do not apply to an audit input.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(pd.read_parquet(folder / rd.RECORDS_FILE), source=source_obj,
                                          name=str(spec.get("name")), digest=str(spec.get("digest")))
        return DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(key="mlflow.data.context", value="audit")])


def _upload_once(folder: Path, run: Mapping[str, Any], uri: str) -> dict[str, Any]:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    target = _open_run(client, uri, run, folder)
    run_id, experiment_id = target.info.run_id, target.info.experiment_id
    now = int(time.time() * 1000)
    params, tags = list(run["params"].items()), list(run["tags"].items())
    metrics = list(run["metrics"].items())
    for i in range(0, max(len(params), len(tags), len(metrics)), BATCH):  # MLflow's per-call limits
        client.log_batch(run_id, params=[Param(k, v) for k, v in params[i:i + BATCH]],
                         tags=[RunTag(k, v) for k, v in tags[i:i + BATCH]],
                         metrics=[Metric(k, float(v), now, 0) for k, v in metrics[i:i + BATCH]])
    if (folder / rd.ARTIFACTS_DIR).is_dir():
        client.log_artifacts(run_id, str(folder / rd.ARTIFACTS_DIR))
    for path, entry in run.get("tables", {}).items():
        client.log_table(run_id, rd.read_table(folder, entry), artifact_file=path)
    if run.get("dataset_input"):
        client.log_inputs(run_id, datasets=[_dataset_input(folder, run["dataset_input"])])
    import mlflow

    if mlflow.active_run() is None or mlflow.active_run().info.run_id != run_id:
        client.set_terminated(run_id, "FINISHED", end_time=run.get("end_ms"))
    info = {"status": "finished", "run_id": run_id, "experiment_id": experiment_id, "tracking_uri": uri,
            "artifact_uri": target.info.artifact_uri, **runs_link(uri, experiment_id, run_id)}
    rd.write_upload(folder, info)
    return info


def upload_run_dir(run_dir: str | Path, uri: str | None = None,
                   retry_seconds: float = DEFAULT_RETRY_SECONDS) -> dict[str, Any]:
    """Upload a run directory to MLflow (`uri`: default the one it was written for; into the active run when
    one is open). Attempts are repeated, pauses 1, 2, 4... s, while `retry_seconds` last.

    Returns {"run_id", "experiment_id", "tracking_uri", "artifact_uri", "runs_url", "ui_command", "status"};
    TrackingUnavailable (one line, naming the run directory) when no attempt succeeded, also recorded in
    upload.json ({"status": "failed", "error": <the line>}) for a caller that sees the failure only through
    an orchestrator."""
    import mlflow

    folder = Path(run_dir)
    run = rd.read_run(folder)
    target = uri or (mlflow.get_tracking_uri() if mlflow.active_run() else run["tracking_uri"])
    start, pause, attempts = time.monotonic(), FIRST_PAUSE_SECONDS, 0
    while True:
        attempts += 1
        left = retry_seconds - (time.monotonic() - start)
        try:
            with bounded_http(max(left, 1.0)), store_lock(target):
                return _upload_once(folder, run, target)
        except _retryable() as exc:
            elapsed = time.monotonic() - start
            if elapsed + pause >= retry_seconds:
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                decision = rd.read_decision(folder).get("status", "unknown")
                message = (f"tracking store {redact(target)} unreachable ({attempts} attempts in {elapsed:.0f} s: "
                           f"{reason}); the gate decision ({decision}, not recorded as an approval) and the scores "
                           f"are kept in {folder}; upload them with: influencegate sync {folder}")
                rd.write_upload(folder, {**rd.read_upload(folder), "status": "failed", "error": message})
                raise TrackingUnavailable(message) from exc
            time.sleep(pause)
            pause *= 2
