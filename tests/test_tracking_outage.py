"""The gate's decision survives a tracking outage: an audit writes its run directory first, uploads it to a real
MLflow server (on PostgreSQL) with a bounded retry, exits 3 when the server is gone, and `sync` completes the run
once it is back."""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from tracking_server import MlflowServer, Postgres, free_port


def _small_run_dir(tmp_path: Path, uri: str, folder: str = "run") -> Path:
    from influencegate.integrations.mlflow.run_dir import RunRecord, write_run_dir

    decision = {"dataset_name": "tiny", "dataset_version": "v1", "approved": True, "status": "approved"}
    record = RunRecord(experiment="outage-tests", run_name="tiny-v1", tracking_uri=uri,
                       tags={"gate.status": "approved"}, params={"scorer.rank": "8"}, metrics={"n_rows": 2.0},
                       artifacts={"gate/decision.json": decision},
                       tables={"scores/scores_table.json": pd.DataFrame({"sample_id": ["a", "b"]})})
    return write_run_dir(tmp_path / folder, record)


def test_upload_to_a_dead_port_gives_up_within_its_budget_in_one_line(tmp_path: Path) -> None:
    from influencegate.integrations.mlflow import TrackingUnavailable, read_decision, upload_run_dir

    uri = f"http://127.0.0.1:{free_port()}"
    folder = _small_run_dir(tmp_path, uri)
    start = time.monotonic()
    with pytest.raises(TrackingUnavailable) as caught:
        upload_run_dir(folder, retry_seconds=3)
    elapsed = time.monotonic() - start
    assert elapsed < 3 + 3, elapsed  # the budget, plus at most one attempt's bounded HTTP retry
    message = str(caught.value)
    assert "\n" not in message and "unreachable" in message and f"influencegate sync {folder}" in message
    assert read_decision(folder)["approved"] is True  # kept locally, for sync


def test_sync_refuses_a_folder_that_holds_no_run_in_one_line(tmp_path: Path, capsys) -> None:
    from influencegate.cli import main

    assert main(["sync", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("influencegate: error:") and "not a run directory" in err and "\n" not in err


def test_tracking_retry_setting_is_checked_before_work(tmp_path: Path, capsys) -> None:
    from influencegate.cli import main

    assert main(["audit", "--set", "tracking.retry_seconds=-1"]) == 2
    assert "retry_seconds" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """PostgreSQL + `mlflow server` on 127.0.0.1 for this module (stopped at its end)."""
    root = tmp_path_factory.mktemp("tracking")
    database = Postgres(root)
    server = MlflowServer(database.uri, root)
    server.start()
    yield server
    server.stop()
    database.stop()


@pytest.mark.slow
def test_audit_on_a_postgres_tracking_server_survives_an_outage_and_syncs(
        tmp_path: Path, monkeypatch, digits_folder, audit_config, tracking_server, capsys, caplog) -> None:
    from mlflow.tracking import MlflowClient

    from influencegate.cli import main
    from influencegate.integrations.zenml import list_versions

    monkeypatch.chdir(tmp_path)
    folder = digits_folder(tmp_path / "outage", count=60)
    config = audit_config(folder, tracking={"uri": tracking_server.uri, "experiment": "outage", "retry_seconds": 4})

    # 1. the server is up: the audit logs there and the run reads back through MlflowClient
    first_dir = tmp_path / "runs" / "first"
    assert main(["audit", str(config), "--run-dir", str(first_dir)]) == 0
    uploaded = json.loads((first_dir / "upload.json").read_text())
    client = MlflowClient(tracking_server.uri)
    run = client.get_run(uploaded["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["gate.status"] == "approved"
    assert run.data.params["scorer.rank"] == "8" and run.data.metrics["n_rows"] == 60

    # 2. the server is killed: exit 3 in bounded time, one line, the decision and the scores kept locally,
    #    no approval recorded
    tracking_server.stop()
    capsys.readouterr()
    caplog.clear()
    second_dir = tmp_path / "runs" / "second"
    start = time.monotonic()
    assert main(["audit", str(config), "--run-dir", str(second_dir), "--set", "scorer.seed=1"]) == 3
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("influencegate: infrastructure fault, dataset NOT approved: tracking store")
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.exc_text] == []  # ZenML's "Step failed." only
    assert f"influencegate sync {second_dir}" in err
    decision = json.loads((second_dir / "artifacts" / "gate" / "decision.json").read_text())
    assert decision["approved"] is True and decision["dataset_name"] == "outage"
    assert len(pd.read_parquet(second_dir / "artifacts" / "scores" / "scores.parquet")) == 60
    assert list(list_versions("outage")["status"]) == ["approved"]  # the first audit's; none for the faulted one


    # 3. the server is back: sync completes the MLflow run (params, metrics, tags, artifacts, dataset input)
    tracking_server.start()
    assert len(client.search_runs([run.info.experiment_id])) == 1  # nothing of the faulted audit reached it
    assert main(["sync", str(second_dir)]) == 0
    synced = client.get_run(json.loads((second_dir / "upload.json").read_text())["run_id"])
    assert synced.info.status == "FINISHED"
    assert synced.data.tags["gate.status"] == "approved" and synced.data.tags["dataset.name"] == "outage"
    assert synced.data.params["scorer.seed"] == "1" and synced.data.metrics["gate.approved"] == 1.0
    assert synced.data.tags["mlflow.note.content"].startswith("## APPROVED: outage")
    files = {a.path for a in client.list_artifacts(synced.info.run_id, "gate")}
    assert {"gate/decision.json", "gate/report.html", "gate/data_docs"} <= files
    assert {a.path for a in client.list_artifacts(synced.info.run_id, "scores")} >= {"scores/scores.parquet",
                                                                                       "scores/scores_table.json"}
    assert [(i.dataset.name, i.dataset.digest) for i in synced.inputs.dataset_inputs] == [
        ("outage", decision["dataset_version"])]
    assert main(["sync", str(second_dir)]) == 0  # a second sync uploads nothing twice
    assert "already uploaded" in capsys.readouterr().out
    print(f"outage audit exit 3 after {elapsed:.1f} s")


def test_two_uploads_at_once_to_a_server_get_two_run_names(tmp_path: Path, tracking_server, monkeypatch) -> None:
    """Two uploads of identical records to one tracking server, both creating their run only after both have
    looked at the experiment's names (the interleaving a search-then-create naming loses): two names."""
    from mlflow.tracking import MlflowClient

    from influencegate.integrations.mlflow import upload_run_dir

    both_looked = threading.Barrier(2, timeout=60)
    create_run = MlflowClient.create_run

    def create_after_both(self, *args, **kwargs):
        both_looked.wait()
        return create_run(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "create_run", create_after_both)
    folders = [_small_run_dir(tmp_path, tracking_server.uri, name) for name in ("first", "second")]
    with ThreadPoolExecutor(2) as pool:
        uploads = list(pool.map(lambda folder: upload_run_dir(folder, retry_seconds=30), folders))
    client = MlflowClient(tracking_server.uri)
    runs = [client.get_run(upload["run_id"]) for upload in uploads]
    names = [run.info.run_name for run in runs]
    assert names[0] != names[1], names
    assert names == [f"tiny-v1-{run.info.run_id[:4]}" for run in runs]
    assert {run.info.status for run in runs} == {"FINISHED"}
