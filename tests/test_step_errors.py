"""An input error found inside a ZenML step (no readable image, duplicate sample ids with findings on) is exit 2
with one line naming the step, read back from the ZenML store; ZenML logs the step's failure without a traceback."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from zenml import pipeline, step

from influencegate.cli import main


def _one_line_input_error(capsys, caplog) -> str:
    """The CLI's last line, checked to be a one-line input error; no log record carried a traceback."""
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.exc_text] == []
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("influencegate: error: step ") and "dataset NOT approved" in lines[-1]
    return lines[-1]


def test_no_readable_image_is_exit_2_in_one_line(tmp_path: Path, digits_folder, audit_config, capsys, caplog) -> None:
    folder = digits_folder(tmp_path / "unreadable", count=3, corrupt=3)
    assert main(["audit", str(audit_config(folder)), "--run-dir", str(tmp_path / "run")]) == 2
    assert "readable" in _one_line_input_error(capsys, caplog)


def test_duplicate_sample_ids_with_findings_are_exit_2_in_one_line(tmp_path: Path, digits_folder, audit_config,
                                                                  capsys, caplog) -> None:
    digits_folder(tmp_path / "images", count=24)
    ids = [f"s{i}" for i in range(24)]
    ids[5] = ids[4]
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"path": [f"images/img_{i:04d}.png" for i in range(24)], "sample_id": ids}).to_csv(manifest,
                                                                                                  index=False)
    assert main(["audit", str(audit_config(manifest)), "--run-dir", str(tmp_path / "run")]) == 2
    line = _one_line_input_error(capsys, caplog)
    assert "find_issues" in line and "unique" in line


def test_a_step_failure_is_found_by_its_run_directory_only(tmp_path: Path) -> None:
    from influencegate.integrations.zenml.step_failures import failed_step

    assert failed_step("dataset_audit_pipeline", str(tmp_path / "never-used")) is None


@step(enable_cache=False)
def _upload_that_fails() -> int:
    from influencegate.integrations.mlflow import TrackingUnavailable

    raise TrackingUnavailable("tracking store http://127.0.0.1:9 unreachable")


@pipeline(enable_cache=False)
def _outage_pipeline() -> None:
    _upload_that_fails()


def test_a_tracking_outage_in_a_step_is_logged_without_its_traceback(caplog) -> None:
    from influencegate.cli.pipelines import quiet_logs

    quiet_logs()
    with pytest.raises(RuntimeError):
        _outage_pipeline()
    failed = [r for r in caplog.records if "failed" in r.getMessage()]
    assert failed and not any(r.exc_info or r.exc_text for r in caplog.records)
