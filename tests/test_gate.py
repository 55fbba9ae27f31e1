"""The Great Expectations gate: approves clean versions, rejects planted problems, fails closed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from influencegate.statistics import add_high_influence, summary_table, summary_with_findings
from influencegate.findings.run import find_all
from influencegate.integrations.great_expectations import DEFAULT_SUITE, load_suite, run_gate, suite_hash

ERROR_FRACTION = "summary.error_fraction.expect_column_values_to_be_between"


def scores_table(n: int = 400, errors: int = 0, seed: int = 0) -> pd.DataFrame:
    """A scores table shaped like the scorer's: lognormal influence, `errors` unreadable rows."""
    rng = np.random.default_rng(seed)
    influence = np.exp(rng.normal(4.0, 0.4, n))
    table = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "path": [f"/d/s{i}.png" for i in range(n)],
                          "influence": influence, "log_influence": np.log(influence)})
    table["influence_rank"] = table["influence"].rank(ascending=False, method="first").astype("Int64")
    table["influence_percentile"] = 100.0 * (n - table["influence_rank"].astype(float)) / (n - 1)
    table["error"] = None
    table.loc[: errors - 1, ["influence", "log_influence"]] = np.nan
    table.loc[: errors - 1, "error"] = "unreadable: cannot identify image file"
    return add_high_influence(table)


def gate(table: pd.DataFrame, **kwargs):
    """The default gate on `table` with its real findings (random 16-d embeddings: no copies, no skew)."""
    embeddings = np.random.default_rng(1).normal(size=(int(table["error"].isna().sum()), 16)).astype(np.float32)
    found = find_all(table, embeddings)
    summary = pd.DataFrame([summary_with_findings(found.table, found.metrics)])
    return run_gate(found.table, summary, dataset_name="synthetic", dataset_version="v1",
                    scorer_config={"rank": 8}, **kwargs)


def test_default_suite_is_documented_and_hashed() -> None:
    suite = load_suite(DEFAULT_SUITE)
    expectations = [e for table in suite["tables"].values() for e in table]
    assert len(expectations) >= 10
    assert all(e["meta"].get("why") for e in expectations), "every threshold is explained in meta.why"
    assert suite_hash(suite) == suite_hash(json.loads(DEFAULT_SUITE.read_text()))
    changed = json.loads(DEFAULT_SUITE.read_text())
    changed["tables"]["summary"][1]["kwargs"]["max_value"] = 0.5
    assert suite_hash(changed) != suite_hash(suite)


def test_clean_version_is_approved_with_full_decision(tmp_path: Path) -> None:
    decision = gate(scores_table(), docs_dir=tmp_path / "docs")
    assert decision["approved"] is True and decision["status"] == "approved", decision["reasons"]
    assert decision["dataset_name"] == "synthetic" and decision["dataset_version"] == "v1"
    assert decision["suite"]["name"] == "influencegate_default" and len(decision["suite"]["hash"]) == 16
    assert decision["scorer_config"] == {"rank": 8}
    assert decision["started_at"] <= decision["finished_at"]
    by_name = {e["name"]: e for e in decision["expectations"]}
    assert by_name[ERROR_FRACTION]["observed"] == 0.0
    assert by_name[ERROR_FRACTION]["threshold"] == {"min_value": 0, "max_value": 0.01}
    assert (tmp_path / "docs" / "index.html").is_file() and decision["data_docs"] == str(tmp_path / "docs")
    json.dumps(decision)  # the decision is plain JSON


def test_twenty_percent_unreadable_is_rejected_naming_the_expectation() -> None:
    decision = gate(scores_table(n=400, errors=80))
    assert decision["approved"] is False and decision["status"] == "rejected"
    assert decision["failed_expectations"] == [ERROR_FRACTION]
    failed = next(e for e in decision["expectations"] if e["name"] == ERROR_FRACTION)
    assert failed["observed"] == pytest.approx(0.2) and failed["success"] is False
    assert any("error_fraction" in r and "0.2" in r for r in decision["reasons"])


def test_exception_inside_validation_rejects(monkeypatch: pytest.MonkeyPatch) -> None:
    import great_expectations as gx

    def boom(self, *args, **kwargs):
        raise RuntimeError("injected failure inside validation")

    monkeypatch.setattr(gx.Checkpoint, "run", boom)
    decision = gate(scores_table())
    assert decision["approved"] is False and decision["status"] == "rejected"
    assert any("injected failure inside validation" in r for r in decision["reasons"])


def test_exception_inside_gate_step_rejects(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ZenML step (called directly, outside a pipeline) fails closed the same way."""
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    from influencegate.steps import validate_and_gate
    from influencegate.workflows.references import DatasetRef

    def boom(self, *args, **kwargs):
        raise ValueError("injected: cannot build expectation")

    monkeypatch.setattr(ExpectationConfiguration, "to_domain_obj", boom)
    table = scores_table()
    summary = summary_table(table).iloc[0].to_dict()
    dataset = DatasetRef(kind="images", source="tensors", name="synthetic", version="v1")
    decision, html, _ = validate_and_gate.entrypoint(dataset, table, summary, {"config": {}})
    assert decision["approved"] is False and "REJECTED" in str(html)
    assert any("injected: cannot build expectation" in r for r in decision["reasons"])


@pytest.mark.parametrize("break_it, expected", [
    (lambda t, s: (t.drop(columns=["influence"]), s), "scores.influence.expect_column_to_exist"),
    (lambda t, s: (t, s.drop(columns=["log_influence_q50"])), "summary.log_influence_q50.expect_column_values_to_not_be_null"),
    (lambda t, s: (t, s.assign(log_influence_spread=np.nan)), "summary.log_influence_spread.expect_column_values_to_not_be_null"),
    (lambda t, s: (t.assign(influence=-t["influence"]), s), "scores.influence.expect_column_values_to_be_between"),
])
def test_missing_column_or_metric_rejects(break_it, expected: str) -> None:
    table = scores_table()
    table, summary = break_it(table, summary_table(table))
    decision = run_gate(table, summary, dataset_name="synthetic", dataset_version="v1")
    assert decision["approved"] is False
    assert expected in decision["failed_expectations"]


def test_bad_suite_or_inputs_reject_never_raise(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for kwargs in ({"suite": bad}, {"suite": tmp_path / "missing.json"}, {"suite": {"name": "empty", "tables": {}}}):
        decision = gate(scores_table(), **kwargs)
        assert decision["approved"] is False and decision["reasons"]
    decision = run_gate(None, None, dataset_name="x", dataset_version="y")  # type: ignore[arg-type]
    assert decision["approved"] is False


def test_failing_drift_check_rejects_when_joined() -> None:
    drift = [{"name": "evidently.Value Drift for column log_influence", "success": False, "observed": "p=0.001",
              "threshold": {"p_value_min": 0.05}}]
    decision = gate(scores_table(), extra_checks=drift)
    assert decision["approved"] is False
    assert decision["failed_expectations"] == ["evidently.Value Drift for column log_influence"]


@pytest.mark.slow
def test_cli_audit_rejects_unreadable_version_with_exit_1(tmp_path, monkeypatch, digits_folder, audit_config,
                                                          mlflow_uri, capsys) -> None:
    """End to end through ZenML: 20% unreadable files -> exit 1, the failing expectation named, recorded."""
    from mlflow.tracking import MlflowClient

    from influencegate.cli import main
    from influencegate.integrations.zenml import list_versions

    monkeypatch.chdir(tmp_path)
    folder = digits_folder(tmp_path / "broken_digits", count=100, corrupt=20)
    assert main(["audit", str(audit_config(folder))]) == 1
    out = capsys.readouterr().out
    assert "REJECTED: broken_digits" in out and ERROR_FRACTION in out
    versions = list_versions("broken_digits")
    assert list(versions["status"]) == ["rejected"] and not versions["latest_approved"].any()
    runs = MlflowClient(mlflow_uri).search_runs(
        [e.experiment_id for e in MlflowClient(mlflow_uri).search_experiments()],
        filter_string="tags.`dataset.name` = 'broken_digits'")
    assert [r.data.tags["gate.status"] for r in runs] == ["rejected"]
    assert main(["status", "broken_digits"]) == 1
