"""The curation benchmark's plumbing (benchmarks/curation.py, issue 17) on a tiny run: each removal rule takes
exactly its chosen ids out of the retraining pool, the kept-sample manifest holds those pools, and the same
seeds give the same accuracies."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import curation  # noqa: E402

FRACTIONS = (0.05, 0.2)
STEPS = 2
SEED = 3


@pytest.fixture(scope="module")
def tiny_split(digits) -> curation.Split:
    """100 pool and 50 test digits (the first 150), so a run takes seconds."""
    labels = digits.records["label"].to_numpy(dtype=np.int64)
    pool = digits.subset(digits.sample_ids[:100])
    return curation.Split(pool, list(pool.sample_ids), labels[:100], digits.images[100:150], labels[100:150])


@pytest.fixture(scope="module")
def runs(tiny_split: curation.Split, tmp_path_factory) -> dict[str, Any]:
    """Two runs of the same tiny cell set with the same seed; the first records the pool every pretraining
    received, the ranking table and the manifest."""
    trained: list[list[str]] = []
    tables: list[pd.DataFrame] = []
    train, rankings = curation.train, curation.rankings

    def recording_train(pool, method, seed, steps=curation.STEPS):
        trained.append(list(pool.sample_ids))
        return train(pool, method, seed, steps)

    def recording_rankings(encoder, pool, seed):
        tables.append(rankings(encoder, pool, seed))
        return tables[-1]

    manifest = tmp_path_factory.mktemp("curation") / "manifest.parquet"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(curation, "train", recording_train)
        patch.setattr(curation, "rankings", recording_rankings)
        first = curation.run_split(tiny_split, "simclr", SEED, STEPS, FRACTIONS, manifest=manifest)
    second = curation.run_split(tiny_split, "simclr", SEED, STEPS, FRACTIONS)
    return {"first": first, "second": second, "trained": trained, "table": tables[0],
            "manifest": pd.read_parquet(manifest)}


def test_removed_ids_follow_the_rule_and_the_count() -> None:
    """Each rule removes round(fraction N) ids: the highest / lowest of its column, or a seeded random set."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"sample_id": [f"s{i}" for i in range(40)], "log_influence": rng.normal(size=40),
                          "outlier_score": rng.normal(size=40), "knn_distance": rng.random(40)})
    by_value = lambda column, largest: set(table.nlargest(4, column)["sample_id"] if largest  # noqa: E731
                                           else table.nsmallest(4, column)["sample_id"])
    expected = {"top_influence": by_value("log_influence", True), "bottom_influence": by_value("log_influence", False),
                "top_outlier": by_value("outlier_score", True), "top_knn": by_value("knn_distance", True)}
    for rule, ids in expected.items():
        assert set(curation.removed_ids(table, rule, 0.1, seed=0)) == ids
    random = curation.removed_ids(table, "random", 0.1, seed=0)
    assert len(set(random)) == 4 and random == curation.removed_ids(table, "random", 0.1, seed=0)
    assert random != curation.removed_ids(table, "random", 0.1, seed=1)
    kept = curation.kept_ids(table, (0.1,), seed=0)
    for rule in curation.REMOVALS:
        gone = set(curation.removed_ids(table, rule, 0.1, seed=0))
        assert kept[(rule, 0.1)] == [s for s in table["sample_id"] if s not in gone]


def test_each_retraining_sees_the_pool_without_exactly_the_removed_ids(runs, tiny_split) -> None:
    """Pretraining 0 is the baseline on the whole pool; pretraining 1 + i is cell i, on the pool in pool order
    without that cell's removed ids (recomputed here from the run's own ranking table) and nothing else."""
    pool = list(tiny_split.pool.sample_ids)
    cells = runs["first"]["cells"]
    assert runs["trained"][0] == pool
    assert len(runs["trained"]) == 1 + len(cells) == 1 + len(curation.REMOVALS) * len(FRACTIONS)
    for cell, trained in zip(cells, runs["trained"][1:]):
        gone = curation.removed_ids(runs["table"], cell["rule"], cell["fraction"], SEED)
        assert len(gone) == cell["removed"] == round(cell["fraction"] * len(pool))
        assert trained == [s for s in pool if s not in set(gone)]


def test_manifest_holds_each_cells_kept_ids(runs) -> None:
    """One (rule, fraction) group per cell in the manifest, holding exactly the ids its retraining used."""
    manifest = runs["manifest"]
    assert list(manifest.columns) == ["rule", "fraction", "sample_id"]
    groups = {key: list(group["sample_id"]) for key, group in manifest.groupby(["rule", "fraction"], sort=False)}
    assert len(groups) == len(runs["first"]["cells"])
    for cell, trained in zip(runs["first"]["cells"], runs["trained"][1:]):
        assert groups[(cell["rule"], cell["fraction"])] == trained


def test_same_seeds_reproduce_the_same_numbers(runs) -> None:
    """A second run with the same split, seed and steps gives identical accuracies, deltas and counts."""
    assert runs["first"] == runs["second"]
    accuracies = [c["accuracy"] for c in runs["first"]["cells"]] + [runs["first"]["baseline_accuracy"]]
    assert all(0.0 <= a <= 1.0 for a in accuracies)


def test_train_runs_the_given_number_of_steps(tiny_split) -> None:
    """Fewer steps give different weights from the same seed (the --steps option reaches the optimiser)."""
    one, two = (curation.train(tiny_split.pool, "simclr", SEED, steps) for steps in (1, 2))
    assert any(not torch.equal(a, b) for a, b in zip(one.state_dict().values(), two.state_dict().values()))


def test_summary_marks_only_intervals_that_exclude_zero() -> None:
    """Over 5 seeds, a cell whose deltas are all positive gets an interval above 0, p < 0.05 and bold in the
    table; a cell of deltas around 0 does not."""
    setting = curation.Setting("toy", "digits", False, "simclr")
    seeds = [{"cells": [{"rule": rule, "fraction": f, "junk_share_of_removed": 0.0,
                         "delta": 0.01 + 0.001 * s if (rule, f) == ("top_knn", 0.05) else (-1) ** s * 0.01}
                        for rule in curation.REMOVALS for f in curation.FRACTIONS]} for s in range(5)]
    summary = curation.summarise(setting, seeds)
    up = next(r["delta"] for r in summary if (r["rule"], r["fraction"]) == ("top_knn", 0.05))
    assert up["n_seeds"] == 5 and up["ci95_low"] > 0 and up["p_value"] < 0.05
    assert all(r["delta"]["ci95_low"] < 0 < r["delta"]["ci95_high"] for r in summary if r["delta"] is not up)
    table = curation.markdown_table({"settings": {"toy": {"summary": summary}}})
    assert table.count("**") == 2 and "| toy | top_knn | +0.20 [-1.16, +1.56] | **+1.20 [+1.00, +1.40]** |" in table
