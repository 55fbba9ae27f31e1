"""The combined misalignment score (issue 16, item 4): robust z against the clean reference, the fixed
weighted sum, and the threshold that at most the stated share of clean reference pairs pass."""
from __future__ import annotations

import numpy as np
import pytest

from influencegate.ecif.combined import calibrated_flags, calibrated_threshold, combined_score, reference_z


def test_reference_z_and_combined_score_by_hand():
    reference = np.array([1.0, 2.0, 3.0, 4.0, 5.0])  # median 3, MAD 1 -> scale 1.4826
    z, z_ref = reference_z(np.array([3.0, 6.0]), reference)
    assert z == pytest.approx([0.0, 3.0 / 1.4826])
    assert z_ref == pytest.approx((reference - 3.0) / 1.4826)
    evidence = {"a": (np.array([3.0, 6.0]), reference), "b": (np.array([10.0, 0.0]), np.array([0.0, 0.0, 0.0, 0.0, 2.5]))}
    # b: median 0, MAD 0 -> falls back to the standard deviation, here 1
    score, score_ref = combined_score(evidence, {"a": 2.0, "b": 1.0})
    assert score == pytest.approx([10.0, 6.0 / 1.4826])
    assert score_ref == pytest.approx(2.0 * (reference - 3.0) / 1.4826 + np.array([0.0, 0.0, 0.0, 0.0, 2.5]))
    assert combined_score(evidence, {"a": 1.0, "b": 0.0})[0] == pytest.approx(z)  # a zero weight drops b
    with pytest.raises(KeyError, match="c"):
        combined_score(evidence, {"c": 1.0})


def test_threshold_is_the_conformal_test_and_flags_less_than_the_stated_share_of_the_reference():
    assert calibrated_threshold(np.arange(100.0), 0.02) == 98.0  # k = floor(2.02) - 1 = 1: only 99 passes
    assert calibrated_threshold(np.arange(99.0), 0.02) == 97.0  # k = floor(2.0) - 1 = 1: only 98 passes
    assert calibrated_threshold(np.arange(40.0), 0.02) == np.inf  # (0 + 1) / 41 > 0.02: nothing can pass
    assert calibrated_threshold(np.array([1.0, 5.0, 5.0, 5.0, 7.0]), 0.4) == 5.0  # ties: 7 passes, no 5 does
    rng = np.random.default_rng(0)
    for share in (0.01, 0.02, 0.1):
        reference = rng.normal(size=(2, 237))
        evidence = {"x": (rng.normal(size=50), reference[0]), "y": (rng.normal(size=50), reference[1])}
        score, flags, thresholds = calibrated_flags(evidence, share, {"x": 1.0, "y": 0.5})
        threshold = thresholds["combined"]
        reference_score = combined_score(evidence, {"x": 1.0, "y": 0.5})[1]
        assert flags.tolist() == (score > threshold).tolist()
        passing = int((reference_score > threshold).sum())
        assert passing == int(np.floor(share * 238)) - 1 and passing < share * 237
        # the conformal p-value of each flagged score is <= share, of each other score > share
        p_value = (1 + (reference_score[None, :] >= score[:, None]).sum(1)) / 238
        assert flags.tolist() == (p_value <= share).tolist()
    with pytest.raises(ValueError, match="flag_share"):
        calibrated_threshold(np.arange(3.0), 1.0)
