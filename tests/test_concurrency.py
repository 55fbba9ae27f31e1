"""Two audits of the same dataset version at once, each uploading its run directory to the same fresh local
MLflow store: both runs are recorded, each with its own consistent tags (no failed migration race, no lost run)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

UPLOADER = r"""
import sys, time
from pathlib import Path
import pandas as pd
from influencegate.integrations.mlflow.run_dir import RunRecord, write_run_dir
from influencegate.integrations.mlflow import upload_run_dir

uri, folder, go, status = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
decision = {"dataset_name": "same", "dataset_version": "v1", "approved": status == "approved", "status": status}
record = RunRecord(experiment="concurrent", run_name="same-v1", tracking_uri=uri,
                   tags={"gate.status": status, "dataset.version": "v1", "run.folder": folder.name},
                   artifacts={"gate/decision.json": decision},
                   tables={"scores/scores_table.json": pd.DataFrame({"sample_id": ["a", "b"]})})
write_run_dir(folder, record)
(folder / "ready").touch()
while not go.exists():
    time.sleep(0.01)
print(upload_run_dir(folder, retry_seconds=30)["run_id"])
"""


def test_two_uploads_at_once_to_a_new_local_store_both_record_their_own_run(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri, go = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}", tmp_path / "go"
    folders = [tmp_path / "first", tmp_path / "second"]
    workers = [subprocess.Popen([sys.executable, "-c", UPLOADER, uri, str(folder), str(go), "approved"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for folder in folders]
    deadline = time.monotonic() + 120
    while not all((f / "ready").exists() for f in folders) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()  # both start creating and writing the store together
    results = [w.communicate(timeout=120) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [err[-1500:] for _, err in results]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("concurrent").experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(out.strip() for out, _ in results)
    assert sorted(r.data.tags["run.folder"] for r in runs) == ["first", "second"]
    assert {r.data.tags["gate.status"] for r in runs} == {"approved"} and {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.info.run_name for r in runs}) == 2  # same-v1 and same-v1-2, not two runs of one name
