"""Incremental audits of an appended version (influence.incremental) against a full audit of it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from influencegate import InfluenceConfig, InfluenceScorer
from influencegate.influence.fit_state import fit_state
from influencegate.influence.incremental import score_appended
from influencegate.models import SmallCNN

CONFIG = InfluenceConfig(draws=4, fit_draws=2, rank=8, batch_size=128, progress=False, target_stability=None)


@pytest.fixture(scope="module")
def versions(digits):
    """(encoder, previous version = first 540 digits, its fit state and table, appended version = 600 digits,
    the full audit of the appended version)."""
    torch.manual_seed(0)
    encoder = SmallCNN(in_channels=1)
    previous = digits.subset(digits.sample_ids[:540])
    appended = digits.subset(digits.sample_ids[:600])
    before = InfluenceScorer(encoder, CONFIG).fit(previous)
    full = InfluenceScorer(encoder, CONFIG).fit(appended).score(appended)
    return encoder, fit_state(before), before.score(previous), appended, full


def test_extended_fit_equals_a_fit_of_the_union(versions, digits):
    encoder, state, _, appended, _ = versions
    from influencegate.influence.fit_state import restore_fit

    extended = InfluenceScorer(encoder, CONFIG)
    restore_fit(extended, state)
    extended.extend_fit(digits.subset(digits.sample_ids[540:600]))
    union = InfluenceScorer(encoder, CONFIG).fit(appended)
    for name, curv in union.curvature.items():
        assert extended.curvature[name].count == curv.count
        scale = curv.outer_sum.abs().max().item()  # float32 batches composed differently: relative to the largest entry
        torch.testing.assert_close(extended.curvature[name].outer_sum, curv.outer_sum, rtol=0, atol=1e-6 * scale)


def test_appended_version_reuses_old_scores_within_tolerance(versions):
    encoder, state, table, appended, full = versions
    got, report = score_appended(InfluenceScorer(encoder, CONFIG), appended, state, table, tolerance=0.99,
                                 check_samples=50)
    assert got["sample_id"].tolist() == full["sample_id"].tolist()
    assert (report.previous, report.new, report.recheck_samples) == (540, 60, 50)
    assert report.kept_old_scores and report.recheck_spearman >= 0.99
    new = got["sample_id"].isin(appended.sample_ids[540:])
    np.testing.assert_allclose(got.loc[new, "influence"], full.loc[new, "influence"], rtol=1e-4)
    np.testing.assert_array_equal(got.loc[~new, "influence"],
                                  table.set_index("sample_id").loc[got.loc[~new, "sample_id"], "influence"])
    assert spearmanr(got["influence"], full["influence"]).statistic >= 0.99


def test_a_recheck_below_tolerance_scores_every_old_sample_again(versions):
    encoder, state, table, appended, full = versions
    got, report = score_appended(InfluenceScorer(encoder, CONFIG), appended, state, table, tolerance=1.0,
                                 check_samples=50)
    assert not report.kept_old_scores and report.rescored_old == 50 + 540
    np.testing.assert_allclose(got["influence"], full["influence"], rtol=1e-4)


def test_a_version_that_drops_samples_or_a_kfac_fit_is_refused(versions, digits):
    encoder, state, table, _, _ = versions
    fewer = digits.subset(digits.sample_ids[10:600])
    with pytest.raises(ValueError, match="only adds samples"):
        score_appended(InfluenceScorer(encoder, CONFIG), fewer, state, table)
    from dataclasses import replace

    kfac = InfluenceScorer(encoder, replace(CONFIG, curvature="kfac")).fit(digits.subset(digits.sample_ids[:64]))
    with pytest.raises(ValueError, match="cannot be extended"):
        kfac.extend_fit(digits.subset(digits.sample_ids[64:80]))
