"""Unusable images, label-free: blank, near-constant, saturated (clipped), heavily blurred, or tiny at the source.

Measured on the pixels in [0, 1] (the images denormalised with the dataset's mean and std), in grey
(ITU-R 601 luma for 3 channels), at the resolution the images were loaded at:
  pixel_std       standard deviation of the grey pixels (intensity units, [0, 0.5]);
  clipped_fraction the larger of the shares of pixels at black (<= 1/255) and at white (>= 254/255);
  sharpness       variance of the 4-neighbour Laplacian of the contrast-normalised image, (x - mean) / std:
                  var(Laplacian(x)) / var(x), unitless, 20 for white noise, 0 for a plane. Normalising by the
                  contrast makes it the blur of the content, not of its exposure.
Reasons, in this order, the first content reason only (a blank image is also "blurred"): blank (pixel_std <
min_std and mean at black or white), near_constant (pixel_std < min_std otherwise), saturated
(clipped_fraction > max_clipped), blurred (sharpness < min_sharpness and below blur_ratio x the dataset's
median sharpness: images upscaled beyond their native resolution are all soft, and only the outliers of the
dataset are flagged); then tiny (the original width or height < min_size pixels), joined with "+". The
original size is known only when the table has `width` and `height` columns (e.g. from a manifest): the
loader resizes every image, so without them the size check is skipped and the text says so.

Defaults measured on the embedded digits (1,797, native 8 x 8): pixel_std >= 0.30, clipped_fraction <= 0.75,
sharpness >= 1.9 (median 7.6); the same digits blurred by a Gaussian of sigma 2 px: sharpness <= 0.22;
digits upscaled to 32 px: sharpness 0.010-0.04 (none flagged: blur_ratio).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from influencegate.findings.base import Finding, align_embeddings, check_table
from influencegate.findings.image_stats import as_pixels, grey, laplacian
from influencegate.findings.registry import (Artifact, FindingInputs, FindingPlugin, Metric, Outcome, between,
                                             flagged_ids, register)
from influencegate.plotting.galleries import flagged_gallery

REASONS = ("blank", "near_constant", "saturated", "blurred", "tiny")


@dataclass
class Unusable(Finding):
    """Options and algorithm of the unusable-image finding (thresholds: see the module docstring).

    min_std: pixel_std below which an image is constant (intensity units; 0.02 = 5 of 255 levels);
    dark/bright: the mean at or below / at or above which a constant image is blank; max_clipped: share of
    clipped pixels above which an image is saturated; min_sharpness, blur_ratio: blurred below both
    min_sharpness and blur_ratio x the median sharpness; min_size: pixels, original width or height below it
    is tiny; block: images per batch (memory M x H x W float32 per block).
    """

    min_std: float = 0.02
    dark: float = 0.05
    bright: float = 0.95
    max_clipped: float = 0.9
    min_sharpness: float = 0.5
    blur_ratio: float = 0.2
    min_size: int = 32
    block: int = 1024

    name = "unusable"
    columns = ("is_unusable", "unusable_reason", "pixel_std", "clipped_fraction", "sharpness")

    def __post_init__(self) -> None:
        if not (0 <= self.dark < self.bright <= 1 and 0 <= self.max_clipped <= 1):
            raise ValueError(f"unusable: need 0 <= dark < bright <= 1 and max_clipped in [0, 1], got dark="
                             f"{self.dark}, bright={self.bright}, max_clipped={self.max_clipped}")
        if int(self.block) < 1 or self.min_std < 0 or self.min_sharpness < 0 or self.blur_ratio < 0:
            raise ValueError("unusable: block must be >= 1 and min_std, min_sharpness, blur_ratio >= 0")

    def measure(self, pixels: np.ndarray) -> pd.DataFrame:
        """pixel_std, clipped_fraction, sharpness (and mean) of M x C x H x W pixels in [0, 1]."""
        parts = []
        for start in range(0, len(pixels), self.block):
            x = pixels[start:start + self.block].astype(np.float64)
            g = grey(x)
            flat = g.reshape(len(g), -1)
            lap = laplacian(g)
            var = flat.var(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                sharp = np.where(var > 0, lap.reshape(len(lap), -1).var(axis=1) / var, np.nan) if lap.size else \
                    np.full(len(var), np.nan)
            clipped = np.maximum((flat <= 1 / 255).mean(axis=1), (flat >= 254 / 255).mean(axis=1))
            parts.append(pd.DataFrame({"mean": flat.mean(axis=1), "pixel_std": np.sqrt(var),
                                       "clipped_fraction": clipped, "sharpness": sharp}))
        return pd.concat(parts, ignore_index=True)

    def reasons(self, stats: pd.DataFrame, tiny: np.ndarray) -> list[str | None]:
        """The reason per image ("+"-joined, None when usable) from `measure`'s columns and a tiny mask."""
        constant = stats["pixel_std"].to_numpy() < self.min_std
        extreme = (stats["mean"] <= self.dark) | (stats["mean"] >= self.bright)
        sharp = stats["sharpness"].to_numpy()
        median = np.nanmedian(sharp) if np.isfinite(sharp).any() else np.nan
        blurred = (sharp < self.min_sharpness) & (sharp < self.blur_ratio * median)
        content = np.select([constant & extreme.to_numpy(), constant, stats["clipped_fraction"].to_numpy() > self.max_clipped,
                             blurred], ["blank", "near_constant", "saturated", "blurred"], "")
        return ["+".join(r for r in (c, "tiny" if t else "") if r) or None for c, t in zip(content, tiny)]

    def find(self, table: pd.DataFrame, embeddings: np.ndarray | None = None, *,
             images: torch.Tensor | np.ndarray | None = None, sample_ids: Sequence[str] | None = None,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None, **_: Any) -> pd.DataFrame:
        """images: M x C x H x W normalised by mean/std (C-vectors; None: pixels in [0, 1]), aligned with the
        table as embeddings are (findings.base.align_embeddings). Rows without an image: not unusable, NaN."""
        check_table(table, ["sample_id"], "unusable")
        if images is None:
            raise ValueError("unusable: images are required (M x C x H x W)")
        if len(images.shape) != 4:
            raise ValueError(f"unusable: images must be M x C x H x W, got shape {tuple(images.shape)}")
        positions, _ = align_embeddings(table, np.zeros((len(images), 1)), sample_ids, "unusable")
        stats = pd.concat([self.measure(as_pixels(images[start:start + self.block], mean, std))
                           for start in range(0, len(images), self.block)], ignore_index=True)
        tiny = self.tiny(table).to_numpy()[positions]
        result = pd.DataFrame({"is_unusable": False, "unusable_reason": None, "pixel_std": np.nan,
                               "clipped_fraction": np.nan, "sharpness": np.nan}, index=table.index)
        reasons = self.reasons(stats, tiny)
        rows = table.index[positions]
        result.loc[rows, "unusable_reason"] = pd.Series(reasons, index=rows, dtype=object)
        result.loc[rows, "is_unusable"] = [r is not None for r in reasons]
        for column in ("pixel_std", "clipped_fraction", "sharpness"):
            result.loc[rows, column] = stats[column].to_numpy()
        result["is_unusable"] = result["is_unusable"].astype(bool)
        self._result, self._examined = result, len(positions)
        return result

    def tiny(self, table: pd.DataFrame) -> pd.Series:
        """True where the original width or height (table columns, pixels) is below min_size; all False
        when the table has no width and height columns (size unknown)."""
        if not self.size_known(table):
            return pd.Series(False, index=table.index)
        width, height = (pd.to_numeric(table[c], errors="coerce") for c in ("width", "height"))
        return (width < self.min_size) | (height < self.min_size)

    @staticmethod
    def size_known(table: pd.DataFrame) -> bool:
        """Whether the table carries the original image size (width and height columns)."""
        return {"width", "height"} <= set(table.columns)

    def summary(self) -> dict[str, Any]:
        """examined, unusable, unusable_fraction and n_<reason> for each reason (a "+"-joined reason counts
        for each of its parts)."""
        result = self._require_found("_result")
        reasons = result["unusable_reason"].dropna().str.split("+").explode()
        return {"examined": int(self._examined), "unusable": int(result["is_unusable"].sum()),
                "unusable_fraction": float(result["is_unusable"].sum() / max(self._examined, 1)),
                **{f"n_{r}": int((reasons == r).sum()) for r in REASONS}}


@register
class UnusableFinding(FindingPlugin):
    """The registered unusable-image finding (off unless configured: `unusable: {}`); options: `Unusable`."""

    name = "unusable"
    Config = Unusable
    default = False
    columns = Unusable.columns
    metrics = (Metric("unusable_fraction", "fraction of examined samples", "images flagged is_unusable / images"),
               Metric("n_unusable", "count of samples", "images flagged is_unusable"),
               *(Metric(f"n_{r}", "count of samples", f"images flagged {r}" + (" (NaN: original size unknown)"
                                                                             if r == "tiny" else ""))
                 for r in REASONS))
    figures = (Artifact("unusable_gallery", "figures/unusable_images.png"),)
    expectations = {"summary": [between(
        "unusable_fraction", "Blank, constant, clipped or heavily blurred images (or tiny originals) teach nothing "
        "and waste compute; a few arise in any scrape, above 1% the collection step is broken.", 0, 0.01)]}

    def run(self, inputs: FindingInputs, config: Unusable) -> Outcome:
        columns = config.find(inputs.table, images=inputs.images, sample_ids=inputs.sample_ids, mean=inputs.mean,
                              std=inputs.std)
        found = config.summary()
        known = config.size_known(inputs.table)
        metrics = {"unusable_fraction": found["unusable_fraction"], "n_unusable": float(found["unusable"]),
                   **{f"n_{r}": float(found[f"n_{r}"]) for r in REASONS}}
        if not known:
            metrics["n_tiny"] = float("nan")
        flagged = [f"{r} ({flagged_ids(inputs.table, columns['unusable_reason'].str.contains(r, na=False))})"
                   for r in REASONS if found[f"n_{r}"]]
        text = (f"{found['unusable']} of {found['examined']} images are unusable"
                + (": " + "; ".join(flagged) + "." if flagged else ".")
                + ("" if known else " Size check skipped: the table has no width/height columns (original size "
                   "unknown; images are resized when loaded)."))
        return Outcome(columns, metrics, text)

    def draw(self, table: pd.DataFrame, images_by_id: Any, groups: Sequence[str]) -> dict[str, Any]:
        return {"unusable_gallery": flagged_gallery(table, images_by_id, "is_unusable", "unusable_reason",
                                                    "unusable images")}
