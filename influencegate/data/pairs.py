"""Image-text pairs: a dataset version whose records carry a `caption` per image.

The pair audit reads them here, the image audit reads plain images through `load_images`; both are
ImageDatasets, so everything downstream (references, figures, the review) handles them alike.
"""
from __future__ import annotations

import pandas as pd

from influencegate.data.captions import PARTS, captioned_digits
from influencegate.data.dataset import ImageDataset
from influencegate.data.errors import DatasetError
from influencegate.data.loader import load_images

#: The embedded default pairs: scikit-learn's digits with templated captions, a share of them shuffled.
DIGITS_CAPTIONS = "digits-captions"


def load_pairs(source: str = DIGITS_CAPTIONS, image_size: int | None = None, channels: int | None = None,
               name: str | None = None, shuffled_fraction: float = 0.2, seed: int = 0, part: str = "all",
               workers: int = 0) -> ImageDataset:
    """An ImageDataset of image-text pairs: a manifest with `path` and `caption` columns, WebDataset shards
    (image + .txt caption) or Parquet files with image bytes and a `caption` column, or "digits-captions"
    (the embedded default: templated captions, `shuffled_fraction` of them shuffled with `seed`, the truth in
    the records' `is_misaligned` column; `part` "audit" or "reference" selects one of its two disjoint parts,
    see `influencegate.data.captions.captioned_digits`). Raises DatasetError for a source without a caption
    column or a bad option."""
    if source == DIGITS_CAPTIONS:
        if not 0.0 <= float(shuffled_fraction) < 1.0:
            raise DatasetError(f"shuffled_fraction must be in [0, 1), got {shuffled_fraction}")
        if part not in PARTS:
            raise DatasetError(f"part must be one of {', '.join(PARTS)}, got {part!r}")
        dataset = captioned_digits(float(shuffled_fraction), int(seed), image_size, channels, part)
        if name:
            dataset.name = name
        return dataset
    dataset = load_images(source, image_size=image_size, channels=channels, name=name, workers=workers)
    if part != "all":
        raise DatasetError(f"part={part!r} applies to {DIGITS_CAPTIONS!r} only; split a manifest into two files")
    if "caption" not in dataset.records.columns:
        raise DatasetError(f"{source!r} has no 'caption' column: image-text pairs need a manifest with path and "
                           "caption columns")
    # a number in a caption column is a caption too ("42"); one text type keeps the column writable to Parquet
    dataset.records["caption"] = [c if isinstance(c, str) or pd.isna(c) else str(c) for c in dataset.records["caption"]]
    return dataset
