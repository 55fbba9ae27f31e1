"""The unusable-image finding: planted blank, constant, clipped and blurred images among real digits and photo-like
patches are flagged with their reason, and nothing else is; the size check runs only when the size is known."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.ndimage import gaussian_filter

from influencegate.findings import FindingsConfig, artifacts, find_all
from influencegate.findings.unusable import Unusable

MEAN, STD = 0.3, 0.25  # the planted set is normalised like an ImageDataset: x = (pixels - MEAN) / STD


def photo_patch(rng: np.random.Generator) -> np.ndarray:
    """8 x 8 photo-like texture: lightly smoothed noise over a gradient, pixels in [0.1, 0.9]."""
    x = gaussian_filter(rng.random((8, 8)), 0.6) + np.linspace(0, 0.3, 8)[None, :]
    return 0.1 + 0.8 * (x - x.min()) / (x.max() - x.min())


@pytest.fixture()
def planted(digits) -> tuple[pd.DataFrame, torch.Tensor, dict[str, str]]:
    """(scores-like table, normalised 1 x 8 x 8 images, {sample_id: planted reason}): 60 real digits, 20 photo
    patches and one planted case per reason (two for blank and saturated: black and white)."""
    rng = np.random.default_rng(0)
    pixels = [d[0] for d in (digits.images[:60] * torch.tensor(digits.std).view(-1, 1, 1)
                             + torch.tensor(digits.mean).view(-1, 1, 1)).clamp(0, 1).numpy()]
    pixels += [photo_patch(rng) for _ in range(20)]
    ids = [f"digit{i:02d}" for i in range(60)] + [f"photo{i:02d}" for i in range(20)]
    clipped_white = np.ones((8, 8))
    clipped_white[3:5, 3:5] = 0.4  # an over-exposed frame: all white but a small dark detail
    clipped_black = np.zeros((8, 8))
    clipped_black[2:4, 3:5] = 0.7
    planted = {"blank_black": (np.zeros((8, 8)), "blank"), "blank_white": (np.ones((8, 8)), "blank"),
               "gray": (np.full((8, 8), 0.5) + rng.normal(0, 0.003, (8, 8)), "near_constant"),
               "clip_white": (clipped_white, "saturated"), "clip_black": (clipped_black, "saturated"),
               "blurred": (gaussian_filter(pixels[0], 2.0), "blurred")}
    for sample_id, (image, _) in planted.items():
        ids.append(sample_id)
        pixels.append(image)
    images = torch.from_numpy((np.stack(pixels)[:, None].astype(np.float32) - MEAN) / STD)
    table = pd.DataFrame({"sample_id": ids, "path": ids, "influence": 1.0, "log_influence": 0.0,
                          "influence_rank": range(1, len(ids) + 1), "error": None})
    return table, images, {s: reason for s, (_, reason) in planted.items()}


def test_exactly_the_planted_images_are_flagged_with_their_reason(planted):
    table, images, expected = planted
    config = FindingsConfig(outliers=None, duplicates=None, unusable={})
    found = find_all(table, None, images, config, mean=[MEAN], std=[STD])
    flagged = found.table[found.table["is_unusable"]]
    assert dict(zip(flagged["sample_id"], flagged["unusable_reason"])) == expected
    assert found.metrics["n_unusable"] == len(expected) == 6
    assert found.metrics["unusable_fraction"] == pytest.approx(6 / len(table))
    assert found.metrics["n_blank"] == 2 and found.metrics["n_saturated"] == 2 and found.metrics["n_blurred"] == 1
    assert math.isnan(found.metrics["n_tiny"])  # the original size is unknown: not measured
    text = found.texts["unusable"]
    assert "6 of 86 images are unusable" in text and "blank (blank_black, blank_white)" in text
    assert "blurred (blurred)" in text and "Size check skipped" in text
    art = artifacts(found)
    assert art["figures/unusable_images.png"].mode == "RGB" and "unusable" in art["findings/texts.json"]


def test_tiny_originals_are_flagged_when_the_size_is_known(planted):
    table, images, expected = planted
    sized = table.assign(width=64, height=64)
    sized.loc[sized["sample_id"].isin(["digit03", "blurred"]), "width"] = 12
    found = find_all(sized, None, images, FindingsConfig(outliers=None, duplicates=None, unusable={}),
                     mean=[MEAN], std=[STD])
    reasons = found.table.set_index("sample_id")["unusable_reason"]
    assert reasons["digit03"] == "tiny" and reasons["blurred"] == "blurred+tiny"
    assert found.metrics["n_tiny"] == 2 and "Size check skipped" not in found.texts["unusable"]


def test_all_embedded_digits_are_usable_and_error_rows_are_neutral(digits):
    table = pd.DataFrame({"sample_id": ["broken", *digits.sample_ids], "error": ["unreadable", *[None] * len(digits)]})
    result = Unusable().find(table, images=digits.images, mean=digits.mean, std=digits.std)
    assert not result["is_unusable"].any()
    assert math.isnan(result.loc[0, "sharpness"]) and result.loc[0, "unusable_reason"] is None


def test_off_by_default_and_its_gate_line_when_on(planted):
    from influencegate.statistics import summary_with_findings
    from influencegate.integrations.great_expectations import run_gate

    table, images, _ = planted
    assert "is_unusable" not in find_all(table, None, images, FindingsConfig(outliers=None, duplicates=None)).table
    config = FindingsConfig(outliers=None, duplicates=None, unusable={})
    found = find_all(table, None, images, config, mean=[MEAN], std=[STD])
    summary = pd.DataFrame([summary_with_findings(found.table, found.metrics)])
    decision = run_gate(found.table, summary, dataset_name="t", dataset_version="v", findings=config)
    assert "summary.unusable_fraction.expect_column_values_to_be_between" in decision["failed_expectations"]
    with pytest.raises(ValueError, match="findings.unusable"):
        FindingsConfig(unusable={"min_blur": 1})
