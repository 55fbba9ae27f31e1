"""Review that leads somewhere: the flagged-rows table with thumbnails, the run description and name, metrics
that were not measured, the one-page gate report, the runs link; and a real MLflow run read back."""
from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from influencegate.report.gate_report import decision_html, decision_summary, with_verdict
from influencegate.report.review import flagged_rows, review_table
from influencegate.report.run_note import description, not_measured, run_name

#: A fast scorer (the logging is under test here, not the engine), as conftest.FAST_SCORER.
FAST_SCORER = {"rank": 8, "draws": 2, "curvature": "kfac", "batch_size": 256, "progress": False}
NETWORK = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def _table() -> pd.DataFrame:
    """Six rows: one unreadable, one duplicate, two outliers, one high influence, one clean."""
    return pd.DataFrame({
        "sample_id": ["a", "b", "c", "d", "e", "f"], "path": [f"/d/{s}.png" for s in "abcdef"],
        "influence": [1.0, 2.0, 3.0, 9.0, np.nan, 1.5], "log_influence": np.log([1.0, 2.0, 3.0, 9.0, np.nan, 1.5]),
        "influence_percentile": [0.0, 50.0, 75.0, 100.0, np.nan, 25.0],
        "is_high_influence": [False, False, False, True, False, False],
        "is_outlier": [False, False, True, True, False, False], "outlier_score": [0.1, 0.2, 4.0, 6.0, np.nan, 0.3],
        "duplicate_group": [pd.NA, 1, pd.NA, pd.NA, pd.NA, 1], "is_duplicate": [False, True, False, False, False, False],
        "duplicate_of": [None, "f", None, None, None, None], "error": [None, None, None, None, "cannot decode", None]})


def _decision(approved: bool = False) -> dict:
    expectations = [
        {"name": "summary.error_fraction.expect_column_values_to_be_between", "table": "summary",
         "column": "error_fraction", "threshold": {"max_value": 0.01}, "observed": 0.17, "success": approved,
         "why": "At most 1% unreadable."},
        {"name": "summary.fairness_min_p_value.expect_column_values_to_be_between", "table": "summary",
         "column": "fairness_min_p_value", "threshold": {"min_value": 0.001}, "observed": 1.0, "success": True,
         "why": "No group over-represented among the most influential."}]
    return {"dataset_name": "toy", "dataset_version": "0123456789abcdef", "approved": approved,
            "status": "approved" if approved else "rejected", "expectations": expectations,
            "failed_expectations": [e["name"] for e in expectations if not e["success"]],
            "reasons": [] if approved else ["summary.error_fraction...: observed 0.17"],
            "suite": {"name": "influencegate_default", "hash": "abc123", "path": None},
            "summary": {"n_rows": 6.0, "fairness_columns_audited": math.nan, "fairness_min_p_value": math.nan}}


def test_review_table_holds_only_flagged_rows_worst_first_with_thumbnails() -> None:
    images = {s: np.full((1, 8, 8), 0.5, dtype=np.float32) for s in "abcdf"}
    review = review_table(_table(), images.__getitem__)
    assert list(review.columns) == ["finding", "reason", "sample_id", "path", "severity", "score", "image"]
    assert set(zip(review["finding"], review["sample_id"])) == {
        ("error", "e"), ("duplicate", "b"), ("outlier", "c"), ("outlier", "d"), ("high_influence", "d")}
    assert review["severity"].is_monotonic_decreasing
    assert list(review["finding"][:2]) == ["error", "duplicate"]  # facts first at severity 1
    assert review.set_index(["finding", "sample_id"]).loc[("outlier", "d"), "severity"] == 1.0
    assert all(isinstance(i, Image.Image) and max(i.size) <= 64 for i in review["image"])  # the error row: a tile
    assert review["reason"].iloc[0] == "cannot decode" and "of f" in review["reason"].iloc[1]
    assert len(flagged_rows(_table(), limit=2)) == 2
    assert flagged_rows(_table().assign(is_outlier=False, is_high_influence=False, is_duplicate=False,
                                        error=None)).empty


def test_description_run_name_and_not_measured() -> None:
    decision, summary = _decision(), {"n_rows": 6.0, "n_scored": 5.0, "n_errors": 1.0, "n_outliers": 2.0,
                                      "fairness_columns_audited": math.nan, "fairness_min_p_value": math.nan,
                                      "outlier_fraction": math.nan}
    text = description(decision, summary, flagged_rows(_table()))
    assert text.startswith("## REJECTED: toy @ 0123456789ab")
    assert "rows **6**" in text and "error_fraction" in text and "`e`: error" in text
    assert set(not_measured(summary)) == {"fairness_columns_audited", "fairness_min_p_value", "outlier_fraction"}
    assert not_measured(summary)["fairness_min_p_value"].startswith("fairness not audited")
    assert "approved" in description(_decision(True), {}).splitlines()[0].lower()
    name = run_name("toy", "0123456789abcdef", False)
    assert re.fullmatch(r"toy-01234567-\d{8}-\d{6}-rejected", name)


def test_gate_report_is_one_offline_page_verdict_first() -> None:
    decision = _decision()
    page = decision_html(decision)
    assert not NETWORK.search(page)
    body = page[page.index("<body>"):]
    assert body.index("REJECTED") < body.index("expectation") and "At most 1% unreadable." in body
    assert "not measured" in body and "0.001" in body  # fairness not audited: no passing 1.0 shown
    summary = decision_summary(decision)
    assert summary["status"] == "rejected" and summary["failed"][0]["observed"] == 0.17
    assert summary["suite"] == {"name": "influencegate_default", "hash": "abc123"}
    assert "fairness_min_p_value" in summary["not_measured"]
    marked = with_verdict("<html><body><h1>findings</h1></body></html>", decision)
    assert marked.index("REJECTED") < marked.index("<h1>")


def test_runs_link() -> None:
    from influencegate.integrations.mlflow.review import runs_link

    local = runs_link("sqlite:///mlflow.db", "3", "abc")
    assert local["runs_url"] == "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"
    assert local["ui_command"] == f"mlflow ui --backend-store-uri sqlite:///{Path('mlflow.db').resolve()}"
    assert runs_link("http://mlflow:5000/", "3", "abc") == {
        "runs_url": "http://mlflow:5000/#/experiments/3/runs/abc", "ui_command": None}


def test_logged_run_leads_from_verdict_to_flagged_images(tmp_path: Path, digits_folder, encoder_checkpoint,
                                                         mlflow_uri) -> None:
    """The real step: two runs of one version, read back from MLflow."""
    from mlflow.tracking import MlflowClient
    from zenml.types import HTMLString

    from influencegate import InfluenceConfig
    from influencegate.statistics import summary_with_findings
    from influencegate.workflows.image_audit import find_issues, load_or_pretrain, score_dataset
    from influencegate.workflows.references import DatasetRef
    from influencegate.data import load_images
    from influencegate.integrations.great_expectations import run_gate
    from influencegate.report.findings_figures import html_summary
    from influencegate.steps.tracking import log_to_mlflow

    folder = digits_folder(tmp_path / "review_digits", count=60, corrupt=2)
    shutil.copy(folder / "img_0010.png", folder / "img_copy.png")  # an exact duplicate
    dataset = load_images(str(folder), image_size=8, channels=1)
    encoder = load_or_pretrain(None, str(encoder_checkpoint))[0]
    scores, seconds, _ = score_dataset(dataset, encoder, InfluenceConfig.from_dict(FAST_SCORER))
    found = find_issues(dataset, encoder, scores)
    summary = summary_with_findings(found.table, found.metrics)
    decision = run_gate(found.table, pd.DataFrame([summary]), dataset_name=dataset.name,
                        dataset_version=dataset.version, docs_dir=tmp_path / "docs")
    assert decision["approved"] is False  # 2 unreadable of 61: more than 1% errors
    blank = Image.new("RGB", (8, 8))
    runs = [log_to_mlflow.entrypoint(
        DatasetRef.of(dataset, "images", image_size=8, channels=1), dataset.records, found.table, summary, {"config": {"rank": 8}, "seconds": seconds},
        {"checkpoint": str(encoder_checkpoint), "pretrain_seconds": 0.0, "final_loss": None}, decision,
        tmp_path / "docs", blank, blank, blank,
        findings_report=HTMLString(html_summary("findings", summary, found.texts, {"histogram": blank})),
        tracking={"uri": mlflow_uri, "experiment": "influencegate-review-tests"}) for _ in range(2)]

    client = MlflowClient(mlflow_uri)
    first, second = (client.get_run(r["run_id"]) for r in runs)
    assert first.info.run_name != second.info.run_name
    assert first.info.run_name.startswith(f"{dataset.name}-{dataset.version[:8]}-")
    assert first.info.run_name.endswith(f"-rejected-{first.info.run_id[:4]}")
    assert runs[0]["runs_url"].endswith(f"/#/experiments/{first.info.experiment_id}/runs?workflowType=machine_learning")
    note = first.data.tags["mlflow.note.content"]
    assert note.startswith(f"## REJECTED: {dataset.name}") and "summary.error_fraction" in note
    # fairness was not audited (no group column): absent, with a tag saying why, never a passing 1.0
    assert "fairness_min_p_value" not in first.data.metrics and "fairness_flagged" not in first.data.metrics
    assert "no group column" in first.data.tags["not_measured.fairness_min_p_value"]
    assert "encoder.pretrain_seconds" not in first.data.params and "seconds.pretrain" in first.data.metrics
    assert "dataset.n_rows" not in first.data.params

    def artifact(path: str) -> str:
        return Path(client.download_artifacts(first.info.run_id, path, str(tmp_path / "dl"))).read_text()

    table = json.loads(artifact("review/flagged.json"))
    rows = pd.DataFrame(table["data"], columns=table["columns"])
    assert {"finding", "reason", "sample_id", "path", "severity", "score", "image"} <= set(rows.columns)
    assert rows["severity"].is_monotonic_decreasing and {"error", "duplicate"} <= set(rows["finding"])
    flagged = found.table.set_index("sample_id")
    for finding, sample_id in zip(rows["finding"], rows["sample_id"]):
        column = {"error": "error", "duplicate": "is_duplicate", "outlier": "is_outlier",
                  "high_influence": "is_high_influence"}[finding]
        value = flagged.loc[sample_id, column]
        assert value is True or value == True or (finding == "error" and value is not None), (finding, sample_id)  # noqa: E712
    assert all(i["type"] == "image" for i in rows["image"])
    client.download_artifacts(first.info.run_id, rows["image"][0]["filepath"], str(tmp_path / "img"))
    for path in ("gate/report.html", "findings/summary.html"):
        page = artifact(path)
        assert not NETWORK.search(page), path
        assert "REJECTED" in page, path
    short = json.loads(artifact("gate/decision_summary.json"))
    assert short["status"] == "rejected" and short["failed"] and short["suite"]["hash"] == decision["suite"]["hash"]
