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


def test_threshold_flags_at_most_the_stated_share_of_the_reference():
    assert calibrated_threshold(np.arange(100.0), 0.02) == 97.0  # 98 and 99 pass: 2 of 100
    assert calibrated_threshold(np.arange(100.0), 0.0) == 99.0  # none pass
    assert calibrated_threshold(np.array([1.0, 5.0, 5.0, 5.0]), 0.5) == 5.0  # ties: none pass rather than three
    rng = np.random.default_rng(0)
    for share in (0.01, 0.02, 0.1):
        reference = rng.normal(size=(3, 237))
        evidence = {"x": (rng.normal(size=50), reference[0]), "y": (rng.normal(size=50), reference[1])}
        _, _, threshold = calibrated_flags(evidence, share, {"x": 1.0, "y": 0.5})
        passing = (combined_score(evidence, {"x": 1.0, "y": 0.5})[1] > threshold).sum()
        assert passing == int(np.floor(share * 237))  # continuous scores: exactly the stated share, rounded down
    with pytest.raises(ValueError, match="flag_share"):
        calibrated_threshold(np.arange(3.0), 1.0)
