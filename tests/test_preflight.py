"""Validate before work: a broken suite or encoder is exit 2 with one line, before any pipeline step runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from influencegate.cli import main

GOOD = {"type": "expect_column_values_to_be_between", "kwargs": {"column": "error_fraction", "max_value": 0.5}}


def _suite(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.json"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("{not json", "is not valid JSON"),
    (json.dumps({"name": "s", "tables": {"summary": [{**GOOD, "type": "expect_the_moon"}]}}),
     "unknown expectation type 'expect_the_moon'"),
    (json.dumps({"name": "s", "tables": {"summary": [{**GOOD, "kwargs": {"column": "no_such_metric"}}]}}),
     "names column 'no_such_metric', which is no metric of the audit"),
])
def test_a_broken_suite_is_one_line_before_any_step(text: str, message: str, tmp_path: Path, digits_folder,
                                                    audit_config, capsys) -> None:
    config = audit_config(digits_folder(tmp_path / "images", count=10), suite=str(_suite(tmp_path, text)))
    assert main(["audit", str(config)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("influencegate: error:") and message in err and "\n" not in err
    assert "pipeline" not in captured.out.lower()  # nothing ran


def test_a_good_suite_passes_the_check(tmp_path: Path) -> None:
    from influencegate.integrations.great_expectations.suite_check import suite_problem

    assert suite_problem(None) is None  # the packaged default
    assert suite_problem({"name": "s", "tables": {"summary": [GOOD]}}) is None


def test_an_encoder_that_cannot_load_is_one_line(tmp_path: Path, digits_folder, audit_config, capsys) -> None:
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    config = audit_config(digits_folder(tmp_path / "images", count=10), encoder={"checkpoint": str(broken)})
    assert main(["audit", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot be loaded" in err and "\n" not in err


def test_channel_mismatch_between_config_and_encoder_is_one_line(tmp_path: Path, digits_folder, audit_config,
                                                                  capsys) -> None:
    config = audit_config(digits_folder(tmp_path / "images", count=10), name="rgb")
    assert main(["audit", str(config), "--set", "dataset.channels=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot take 3-channel images" in err and "\n" not in err
