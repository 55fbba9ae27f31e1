"""ZenML pipelines on the real local stack, with a real MLflow store and real GE / Evidently."""
from __future__ import annotations

import json
import re
from datetime import timezone
from pathlib import Path
from typing import Annotated

import pytest
from zenml import pipeline, step
from zenml.client import Client as ZenMLClient

from influencegate.steps import find_issues, load_dataset, load_or_pretrain_encoder, score_influence, validate_and_gate

pytestmark = pytest.mark.slow

EXPECTED_ARTIFACTS = {
    "scores/scores.parquet", "scores/scores_table.json", "scores/summary.json", "figures/log_influence_hist.png",
    "figures/most_influential.png", "figures/least_influential.png", "gate/decision.json",
    "gate/data_docs/index.html", "drift/evidently_report.html", "drift/summary.json",
    "figures/duplicate_groups.png", "figures/outliers.png",
    "figures/embedding_map_tsne.png", "findings/summary.html", "gate/report.html", "gate/decision_summary.json",
}


@step
def keep_approved(decision: dict) -> Annotated[bool, "approved"]:
    """A user's own step consuming the gate decision."""
    return bool(decision["approved"])


@pipeline(enable_cache=False)
def my_pretraining_pipeline(source: str, checkpoint: str) -> None:
    """A user's pipeline built from influencegate.steps (steps and pipelines must live at module level)."""
    dataset, _ = load_dataset(source, image_size=8, channels=1)
    encoder, _ = load_or_pretrain_encoder(dataset, checkpoint=checkpoint)
    influence, _, info = score_influence(dataset, encoder, {"rank": 8, "draws": 2, "curvature": "kfac"})
    scores, summary, _, _, _ = find_issues(dataset, encoder, influence)
    decision, _, _ = validate_and_gate(dataset, scores, summary, info)
    keep_approved(decision)


def _findings_texts(printed: str) -> dict:
    """The findings' texts of the last ZenML run the CLI printed ("ZenML run: <id>")."""
    run = ZenMLClient().get_pipeline_run(re.findall(r"ZenML run: (\S+)", printed)[-1])
    return run.steps["find_issues"].outputs["findings_text"][0].load()


def _artifact_files(client, run_id: str, path: str | None = None) -> set[str]:
    files = set()
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            if item.path.startswith("gate/data_docs/"):
                continue  # GE's static assets: index.html at the top is enough
            files |= _artifact_files(client, run_id, item.path)
        else:
            files.add(item.path)
    return files


def test_own_pipeline_with_influencegate_steps(tmp_path: Path, monkeypatch, digits_folder, encoder_checkpoint) -> None:
    """A user's pipeline composed from influencegate.steps runs on the local stack."""
    monkeypatch.chdir(tmp_path)
    folder = digits_folder(tmp_path / "my_images", count=80)
    run = my_pretraining_pipeline(source=str(folder), checkpoint=str(encoder_checkpoint))
    assert str(run.status) in ("completed", "ExecutionStatus.COMPLETED")
    assert set(run.steps) == {"load_dataset", "load_or_pretrain_encoder", "score_influence", "find_issues",
                              "validate_and_gate", "keep_approved"}
    scores = run.steps["find_issues"].outputs["influencegate_scores"][0].load()
    assert len(scores) == 80 and scores["influence"].notna().all()
    assert {"is_outlier", "outlier_score", "duplicate_group", "is_duplicate", "duplicate_of"} <= set(scores.columns)
    assert run.steps["keep_approved"].outputs["approved"][0].load() is True
    # no group columns were audited (fairness did not run) and (80 distinct digits) no duplicates found: both
    # side tables are empty,
    # and still carry their metadata and visualisations in ZenML (TableMaterializer)
    for name in ("fairness_audit", "duplicate_groups"):
        artifact = run.steps["find_issues"].outputs[name][0]
        table = artifact.load()
        assert len(table) == 0 and len(table.columns) > 0, name
        assert tuple(artifact.run_metadata["shape"]) == table.shape, name
        assert artifact.visualizations, name


def test_two_versions_compare_against_first_approved_and_mlflow_has_everything(
        tmp_path: Path, monkeypatch, digits_folder, audit_config, mlflow_uri, capsys) -> None:
    from mlflow.tracking import MlflowClient

    from influencegate.cli import main
    from influencegate.integrations.zenml import last_approved

    monkeypatch.chdir(tmp_path)
    folder = digits_folder(tmp_path / "handwriting", count=100)
    config = audit_config(folder)

    # outliers against the last approved version: none yet for the first audit, which keeps its state
    approved_reference = ["--set", "findings.outliers.reference=approved"]
    assert main(["audit", str(config), "--resume-dir", str(tmp_path / "v1"), *approved_reference]) == 0
    first = last_approved("handwriting")
    assert first is not None
    v1 = first["decision"]["dataset_version"]
    assert first["decision"]["approved"] is True and len(first["scores"]) == 100
    assert first["decision"]["resume_dir"].endswith("v1") and (tmp_path / "v1" / "statistics.npz").exists()

    printed = capsys.readouterr().out
    assert "dataset: 100 rows, 100 readable, 0 failed\n" in printed
    first_texts = _findings_texts(printed)
    assert "No approved version of 'handwriting' kept its image statistics yet" in first_texts["outliers"]
    digits_folder(folder, count=40, offset=100)  # version 2: the same dataset with 40 more images
    (folder / ".DS_Store").write_bytes(b"finder metadata")  # skipped (hidden), counted, not part of the version
    assert main(["audit", str(config), "--set", "scorer.seed=1", *approved_reference]) == 0
    second = last_approved("handwriting")
    v2 = second["decision"]["dataset_version"]
    assert v2 != v1 and len(second["scores"]) == 140

    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("influencegate-tests")
    printed = capsys.readouterr().out  # the CLI says how to open the runs view
    outliers_text = _findings_texts(printed)["outliers"]
    assert f"last approved version of 'handwriting' ({first['decision']['resume_dir']})" in outliers_text
    assert "from the reference version" in outliers_text and "(100 samples)" in outliers_text
    assert "dataset: 140 rows, 140 readable, 0 failed; skipped in the folder: 1 hidden, 0 symlinks" in printed
    assert f"open: http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}" in printed
    assert "mlflow ui --backend-store-uri sqlite:///" in printed
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`dataset.name` = 'handwriting'",
                              order_by=["attributes.start_time ASC"])
    assert [r.data.tags["dataset.version"] for r in runs] == [v1, v2]
    run = runs[1]
    assert run.data.tags["gate.status"] == "approved"
    assert run.data.tags["dataset.name"] == "handwriting" and run.data.tags["dataset.version"] == v2
    assert run.data.params["scorer.rank"] == "8" and run.data.params["scorer.seed"] == "1"
    assert "scorer.curvature" in run.data.params and "encoder.checkpoint" in run.data.params
    assert run.data.metrics["gate.approved"] == 1.0 and run.data.metrics["n_rows"] == 140
    for metric in ("error_fraction", "log_influence_q50", "log_influence_spread", "high_influence_fraction",
                   "drift.log_influence.score", "seconds.score", "duplicate_fraction", "outlier_fraction"):
        assert metric in run.data.metrics, metric
    for metric in ("fairness_columns_audited", "fairness_min_p_value"):  # no group column: not audited, no 1.0
        assert metric not in run.data.metrics, metric
    assert run.data.tags["not_measured.fairness_min_p_value"].startswith("fairness not audited")
    assert runs[0].info.run_name.startswith(f"handwriting-{v1[:8]}-")
    assert run.info.run_name.endswith(f"-approved-{run.info.run_id[:4]}")  # unique by its run id
    assert run.data.tags["mlflow.note.content"].startswith("## APPROVED: handwriting")
    # The run's times are the audit's (MLflow's Duration column), not those of the upload at its end.
    zenml_run = ZenMLClient().get_pipeline_run(re.findall(r"ZenML run: (\S+)", printed)[-1])
    zenml_start = zenml_run.start_time.replace(tzinfo=timezone.utc).timestamp()
    assert abs(run.info.start_time / 1000 - zenml_start) < 1.0
    assert run.info.end_time - run.info.start_time >= 1000 * run.data.metrics["seconds.score"]
    assert EXPECTED_ARTIFACTS <= _artifact_files(client, run.info.run_id)
    assert [(i.dataset.name, i.dataset.digest) for i in run.inputs.dataset_inputs] == [("handwriting", v2)]

    drift = json.loads(Path(client.download_artifacts(run.info.run_id, "drift/summary.json", str(tmp_path))).read_text())
    assert drift["compared"] is True
    assert drift["reference_version"] == v1 and drift["current_version"] == v2
    assert set(drift["columns"]) == {"log_influence", "influence"}
    html = Path(client.download_artifacts(run.info.run_id, "drift/evidently_report.html", str(tmp_path))).read_text()
    assert len(html) > 10_000  # the real Evidently report, not the "no reference" page
    first_drift = json.loads(Path(client.download_artifacts(runs[0].info.run_id, "drift/summary.json",
                                                            str(tmp_path / "r1"))).read_text())
    assert first_drift["compared"] is False  # the first version had nothing to compare with

    decision = json.loads(Path(client.download_artifacts(run.info.run_id, "gate/decision.json", str(tmp_path))).read_text())
    assert decision["dataset_version"] == v2 and decision["approved"] is True

    capsys.readouterr()
    assert main(["status", "handwriting"]) == 0
    out = capsys.readouterr().out
    assert v1 in out and v2 in out and f"approved: handwriting version {v2}" in out
