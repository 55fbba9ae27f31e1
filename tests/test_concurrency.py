"""Two audits of the same dataset version at once. Each uploads its run directory to the same fresh MLflow store
and records its decision in the same fresh ZenML store, as the end of an audit does (`log_to_mlflow`, then
`record_approval`): both runs are recorded with their own consistent tags (no failed migration race in either
store, no lost run, no shared run name), and `influencegate status` lists both with one approval."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

AUDIT_TAIL = r"""
import sys, time
from pathlib import Path

import pandas as pd

from influencegate.integrations.mlflow import upload_run_dir
from influencegate.integrations.mlflow.run_dir import RunRecord, write_run_dir


def record_only(decision, mlflow_run):
    from zenml import pipeline

    from influencegate.integrations.zenml.store import open_store
    from influencegate.steps import record_approval

    @pipeline(enable_cache=False)
    def record_decision(decision: dict, mlflow_run: dict) -> None:
        record_approval(decision, mlflow_run)

    open_store()  # as run_audit does: two processes creating a new ZenML store at once lost one
    record_decision(decision, mlflow_run)


if __name__ == "__main__":
    uri, folder, go, name, record = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], sys.argv[5]
    decision = {"dataset_name": name, "dataset_version": "v1", "approved": True, "status": "approved"}
    run = RunRecord(experiment="concurrent", run_name=f"{name}-v1", tracking_uri=uri,
                    tags={"gate.status": "approved", "dataset.version": "v1", "run.folder": folder.name},
                    artifacts={"gate/decision.json": decision},
                    tables={"scores/scores_table.json": pd.DataFrame({"sample_id": ["a", "b"]})})
    write_run_dir(folder, run)
    (folder / "ready").touch()
    while not go.exists():
        time.sleep(0.01)
    uploaded = upload_run_dir(folder, retry_seconds=30)
    if record == "record":
        record_only(decision, uploaded)
    print(uploaded["run_id"])
"""


def _two_at_once(tmp_path: Path, uri: str, name: str, record: bool, env: dict[str, str] | None = None) -> list[str]:
    """Run AUDIT_TAIL twice at once (released together once both wrote their run directory; environment
    `env`, default this one); their MLflow run ids."""
    script, go = tmp_path / "audit_tail.py", tmp_path / "go"
    script.write_text(AUDIT_TAIL)
    folders = [tmp_path / "first", tmp_path / "second"]
    workers = [subprocess.Popen([sys.executable, str(script), uri, str(folder), str(go), name,
                                 "record" if record else "upload"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for folder in folders]
    deadline = time.monotonic() + 120
    while not all((f / "ready").exists() for f in folders) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()  # both start creating and writing the stores together
    results = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [err[-1500:] for _, err in results]
    return [out.strip().splitlines()[-1] for out, _ in results]


def test_two_uploads_at_once_to_a_new_local_store_both_record_their_own_run(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    run_ids = _two_at_once(tmp_path, uri, "same", record=False)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("concurrent").experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(run_ids)
    assert sorted(r.data.tags["run.folder"] for r in runs) == ["first", "second"]
    assert {r.data.tags["gate.status"] for r in runs} == {"approved"} and {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.info.run_name for r in runs) == sorted(f"same-v1-{r.info.run_id[:4]}" for r in runs)


@pytest.mark.slow
def test_status_lists_both_audits_of_one_version_at_once(tmp_path: Path) -> None:
    """On a new ZenML store (both processes create it at once: one failed before `open_store`)."""
    env = {**os.environ, "ZENML_CONFIG_PATH": str(tmp_path / "zenml")}
    run_ids = _two_at_once(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", "concurrent_pair", record=True, env=env)
    status = subprocess.run([sys.executable, "-m", "influencegate.cli", "status", "concurrent_pair"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert status.returncode == 0, status.stderr[-1500:]
    rows = [line for line in status.stdout.splitlines() if any(run_id in line for run_id in run_ids)]
    assert len(rows) == 2 and all(" v1 " in row and " approved " in row for row in rows)  # both audits listed
    assert sum(" True " in row for row in rows) == 1  # one approval a consumer reads, not two contradicting ones
    assert "approved: concurrent_pair version v1" in status.stdout
