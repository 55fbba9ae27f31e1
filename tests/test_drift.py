"""Drift against the last approved version: each Evidently method read in its own direction.

Evidently picks K-S (a p-value: drift when it is small) below 1,000 rows and the normed Wasserstein distance
(drift when it is large) from 1,000 rows on; an identical version must never read "drifted" and a shifted one
must, in both families, and our flag must agree with Evidently's own test verdict."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from influencegate.integrations.evidently.drift import DISTANCE, P_VALUE, compare_scores, is_drifted


def scores(n: int, shift: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """A scores table of n rows: log_influence ~ N(shift, 1)."""
    log_influence = np.random.default_rng(seed).normal(shift, 1.0, n)
    return pd.DataFrame({"influence": np.exp(log_influence), "log_influence": log_influence})


@pytest.mark.parametrize("n, family", [(300, P_VALUE), (3000, DISTANCE)])
def test_identical_version_does_not_drift_and_shifted_does(n: int, family: str) -> None:
    reference = scores(n)
    _, same = compare_scores(reference.copy(), reference, dataset_name="d")
    assert same["compared"] and {c["direction"] for c in same["columns"].values()} == {family}
    assert same["drifted_columns"] == 0 and all(t["success"] for t in same["tests"])
    _, shifted = compare_scores(scores(n, shift=1.0, seed=1), reference, dataset_name="d")
    assert shifted["drifted_columns"] == 2 and not any(t["success"] for t in shifted["tests"])
    column = shifted["columns"]["log_influence"]
    expected_threshold = 0.05 if family == P_VALUE else 0.1  # each method's own default
    assert column["threshold"] == expected_threshold
    assert (column["drift_score"] < 0.05) if family == P_VALUE else (column["drift_score"] >= 0.1)


def test_flag_agrees_with_evidentlys_own_verdict() -> None:
    """Independent check of DIRECTIONS: Evidently's test status for the same reports."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    definition = DataDefinition(numerical_columns=["log_influence"])
    for n in (300, 3000):
        for shift in (0.0, 0.05, 1.0):
            current, reference = scores(n, shift, seed=2)[["log_influence"]], scores(n)[["log_influence"]]
            result = Report([ValueDrift(column="log_influence")], include_tests=True).run(
                Dataset.from_pandas(current, data_definition=definition),
                Dataset.from_pandas(reference, data_definition=definition)).dict()
            metric, (test,) = result["metrics"][0], result["tests"]
            ours = is_drifted(float(metric["value"]), metric["config"]["method"], float(metric["config"]["threshold"]))
            assert ours == (str(test["status"]).endswith("FAIL")), (n, shift, metric["config"])


def test_a_set_threshold_applies_to_whichever_method_runs() -> None:
    _, summary = compare_scores(scores(3000), scores(3000), dataset_name="d", threshold=0.0)
    assert summary["columns"]["log_influence"]["threshold"] == 0.0
    assert summary["drifted_columns"] == 2  # a distance >= 0 always drifts: the threshold was applied as a distance
    with pytest.raises(ValueError, match="direction"):
        is_drifted(0.5, "some new method", 0.1)
