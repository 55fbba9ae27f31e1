"""A finding registered inside a test, with no other module edited, shows in the scores table, the summary,
the findings HTML page, the artifacts MLflow logs and the gate; every registered finding is complete."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd
import pytest
from PIL import Image

from influencegate.findings import (REGISTRY, Artifact, FindingInputs, FindingPlugin, Metric, Outcome, artifacts,
                                    find_all, metric_catalog, register, unregister)
from influencegate.findings.registry import between


@dataclass
class DarkOptions:
    """Options of the throwaway finding: log_influence below `cut` is "dark"."""

    cut: float = 0.0


@pytest.fixture()
def dark_finding():
    """Register a throwaway finding for one test, and remove it afterwards."""

    @register
    class Dark(FindingPlugin):
        name = "dark"
        Config = DarkOptions
        columns = ("is_dark",)
        metrics = (Metric("dark_fraction", "fraction of samples", "samples with log_influence below cut"),)
        figures = (Artifact("dark_figure", "figures/dark.png"),)
        tables = (Artifact("dark_rows", "findings/dark_rows.json"),)
        expectations = {"summary": [between("dark_fraction", "at most 10% dark samples", 0, 0.1)]}

        def run(self, inputs: FindingInputs, config: DarkOptions) -> Outcome:
            dark = pd.to_numeric(inputs.table["log_influence"]) < config.cut
            ids = ", ".join(inputs.table.loc[dark, "sample_id"])
            return Outcome(pd.DataFrame({"is_dark": dark}, index=inputs.table.index),
                           {"dark_fraction": float(dark.mean())}, f"{int(dark.sum())} dark samples: {ids}.")

        def draw(self, table: pd.DataFrame, images_by_id: Any, groups: Sequence[str]) -> dict[str, Any]:
            return {"dark_figure": Image.new("RGB", (20, 10), "black")}

        def derive(self, table: pd.DataFrame, config: DarkOptions, groups: Sequence[str]) -> dict[str, pd.DataFrame]:
            return {"dark_rows": table.loc[table["is_dark"], ["sample_id", "log_influence"]]}

    yield Dark
    unregister("dark")


def test_a_registered_finding_reaches_every_output(dark_finding, digits) -> None:
    from influencegate.statistics import summary_with_findings
    from influencegate.integrations.great_expectations import run_gate
    from influencegate.models import SmallCNN
    from influencegate.report import html_summary, render_all

    ds = digits.subset(digits.sample_ids[:40])
    table = pd.DataFrame({"sample_id": ds.sample_ids, "path": ds.sample_ids, "influence": 1.0,
                          "log_influence": [-1.0] * 8 + [1.0] * 32, "influence_rank": range(1, 41), "error": None})
    found = find_all(table, None, ds.images, {"outliers": None, "duplicates": None})
    assert list(found.table["is_dark"]).count(True) == 8  # the table
    summary = summary_with_findings(found.table, found.metrics)
    assert summary["dark_fraction"] == pytest.approx(0.2)  # the summary
    assert found.texts["dark"].startswith("8 dark samples: " + ds.sample_ids[0])
    assert len(found.dark_rows) == 8

    figures = render_all(ds, SmallCNN(), found.table, max_points=30, config=found.config)
    assert set(figures) == {"dark_figure", "embedding_map"}  # fairness needs group columns: none here
    page = html_summary("audit", summary, found.texts, figures, described=metric_catalog())
    assert "dark_figure" in page and "8 dark samples" in page and "samples with log_influence below cut" in page

    logged = artifacts(found, figures=figures)  # what MLflow logs
    assert set(logged) == {"figures/dark.png", "findings/dark_rows.json", "findings/texts.json"}
    assert logged["figures/dark.png"].size == (20, 10) and len(logged["findings/dark_rows.json"]) == 8

    decision = run_gate(found.table, pd.DataFrame([summary]), dataset_name="t", dataset_version="v",
                        findings=found.config)  # the gate: its expectation, from the registry
    assert "summary.dark_fraction.expect_column_values_to_be_between" in decision["failed_expectations"]
    assert "summary.dark_fraction.expect_column_values_to_not_be_null" not in decision["failed_expectations"]


def test_the_gate_adds_only_enabled_findings_and_a_suite_entry_overrides_one(dark_finding) -> None:
    from influencegate.findings import FindingsConfig, suite_with_findings
    from influencegate.integrations.great_expectations import load_suite

    def summary_columns(suite: dict) -> list[str]:
        return [e["kwargs"]["column"] for e in suite["tables"]["summary"]]

    base = load_suite()
    assert "dark_fraction" in summary_columns(suite_with_findings(base))
    assert "dark_fraction" not in summary_columns(suite_with_findings(base, FindingsConfig(dark=None)))
    own = between("dark_fraction", "ours", 0, 0.5)
    mine = suite_with_findings({**base, "tables": {**base["tables"], "summary": [own]}})
    assert [e for e in mine["tables"]["summary"] if e["kwargs"]["column"] == "dark_fraction"] == [own]
    assert "dark_fraction" not in summary_columns(suite_with_findings({**base, "include_findings": False}))


def test_every_registered_finding_is_complete_and_gated() -> None:
    """Each finding declares metrics with units and meanings, and the default suite checks every finding's
    gated metrics; names of columns, metrics and artifacts do not collide across findings."""
    from influencegate.findings import FindingsConfig, suite_with_findings
    from influencegate.integrations.great_expectations import load_suite

    suite = suite_with_findings(load_suite(), FindingsConfig(groups=["group"], **{name: {} for name in REGISTRY}))
    checked = {e["kwargs"].get("column") for table in suite["tables"].values() for e in table}
    seen: dict[str, list[str]] = {"columns": [], "metrics": [], "paths": []}
    for name, plugin in REGISTRY.items():
        assert plugin.metrics and all(m.unit and m.meaning for m in plugin.metrics), name
        gated = {e["kwargs"]["column"] for specs in plugin.expectations.values() for e in specs}
        assert gated and gated <= {m.name for m in plugin.metrics} and gated <= checked, name
        assert all(e["meta"].get("why") for specs in plugin.expectations.values() for e in specs), name
        seen["columns"] += plugin.columns
        seen["metrics"] += [m.name for m in plugin.metrics]
        seen["paths"] += [a.path for a in (*plugin.figures, *plugin.tables)]
    for kind, names in seen.items():
        assert len(names) == len(set(names)), kind
