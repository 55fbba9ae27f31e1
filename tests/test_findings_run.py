"""find_all: the findings of one audit on a scores table, its column contract, metrics and gate semantics."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from influencegate.findings.fairness import RESULT_COLUMNS as FAIRNESS_COLUMNS
from influencegate.findings.run import LEADING_COLUMNS, FindingsConfig, find_all
from influencegate.influence.table import scores_table


@pytest.fixture()
def audited() -> tuple[pd.DataFrame, np.ndarray, torch.Tensor]:
    """200 samples: random embeddings/images, samples 197-199 exact copies of 0-2, and a group column whose
    group 'b' (25% of the data) holds all of the 20 most influential (the audited top 10%)."""
    rng = np.random.default_rng(0)
    n = 200
    embeddings = rng.normal(size=(n, 16)).astype(np.float32)
    images = torch.from_numpy(rng.normal(size=(n, 1, 6, 6)).astype(np.float32))
    embeddings[197:] = embeddings[:3]
    images[197:] = images[:3]
    ids = [f"s{i:03d}" for i in range(n)]
    influence = np.exp(rng.normal(size=n))
    order = np.argsort(-influence)
    group = np.array(["a"] * n, dtype=object)
    group[order[:20]] = "b"
    group[order[-30:]] = "b"
    records = pd.DataFrame({"sample_id": ids, "path": ids, "group": group, "label": rng.integers(0, 3, n),
                            "error": None})
    return scores_table(ids, influence, records), embeddings, images


def test_find_all_fills_the_contract_columns_and_metrics(audited):
    table, embeddings, images = audited
    found = find_all(table, embeddings, images, FindingsConfig(groups=["group"]))
    out = found.table
    assert list(out.columns[:len(LEADING_COLUMNS) - 1]) == [c for c in LEADING_COLUMNS if c != "is_high_influence"]
    assert list(out.columns[-3:]) == ["group", "label", "error"]
    assert len(out) == len(table) and (out["sample_id"] == table["sample_id"]).all()
    copies = out.set_index("sample_id").loc[["s197", "s198", "s199"]]
    assert copies["is_duplicate"].all()
    assert list(copies["duplicate_of"]) == ["s000", "s001", "s002"]
    assert found.metrics["n_duplicates"] == 3 and found.metrics["duplicate_fraction"] == pytest.approx(3 / 200)
    assert found.metrics["fairness_columns_audited"] == 1
    assert found.metrics["fairness_min_p_value"] < 1e-3 and found.metrics["fairness_flagged"] == 1.0
    assert found.metrics["fairness_max_group_ratio"] == pytest.approx(4.0)  # 100% of the top vs 25% of the data
    assert set(found.fairness["group"]) == {"a", "b"}
    assert list(found.fairness.columns) == list(FAIRNESS_COLUMNS)
    unaudited = find_all(table, embeddings, images)  # no group column: fairness not run, NaN, no table
    assert "fairness" not in unaudited.tables and math.isnan(unaudited.metrics["fairness_min_p_value"])
    assert "group" in found.texts["fairness"] and "near-duplicate" in found.texts["duplicates"]
    assert 0 <= found.metrics["outlier_fraction"] < 0.05


def test_rerunning_replaces_the_finding_columns(audited):
    table, embeddings, images = audited
    once = find_all(table, embeddings, images).table
    twice = find_all(once, embeddings, images).table
    assert list(twice.columns) == list(once.columns)
    pd.testing.assert_frame_equal(once, twice)


def test_skipped_finding_leaves_nan_metrics_and_the_default_gate_rejects(audited):
    from influencegate.statistics import summary_with_findings
    from influencegate.integrations.great_expectations import run_gate

    table, embeddings, images = audited
    found = find_all(table, embeddings, images, FindingsConfig(duplicates=None))
    assert math.isnan(found.metrics["duplicate_fraction"])
    assert "is_duplicate" not in found.table.columns
    summary = pd.DataFrame([summary_with_findings(found.table, found.metrics)])
    decision = run_gate(found.table, summary, dataset_name="t", dataset_version="v")
    assert decision["approved"] is False
    assert any("duplicate_fraction" in name for name in decision["failed_expectations"])


def test_the_default_gate_rejects_a_fairness_skew_and_too_many_copies(audited):
    from influencegate.statistics import summary_with_findings
    from influencegate.integrations.great_expectations import run_gate

    table, embeddings, images = audited
    images[150:197] = images[0]  # 47 more exact copies: 50 of 200 removable, far above 5%
    found = find_all(table, embeddings, images, FindingsConfig(groups=["group"]))
    summary = pd.DataFrame([summary_with_findings(found.table, found.metrics)])
    failed = run_gate(found.table, summary, dataset_name="t", dataset_version="v",
                      findings=found.config)["failed_expectations"]
    assert "summary.duplicate_fraction.expect_column_values_to_be_between" in failed
    assert "summary.fairness_min_p_value.expect_column_values_to_be_between" in failed


def test_bad_findings_config_is_a_clear_error(audited):
    table, embeddings, images = audited
    with pytest.raises(ValueError, match="unknown findings option"):
        FindingsConfig.from_dict({"duplicate": {}})
    with pytest.raises(ValueError, match="lacks column"):
        find_all(table, embeddings, images, FindingsConfig(groups=["race"]))
