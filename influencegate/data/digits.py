"""The embedded default dataset: scikit-learn's 1,797 real 8 x 8 handwritten digits (no download)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from influencegate.data.constants import DIGITS_MEAN, DIGITS_STD
from influencegate.data.dataset import ImageDataset
from influencegate.data.errors import check_image_options
from influencegate.data.versioning import tensors_version

DIGITS_SIZE = 8
_DIGITS_MAX = 16.0  # sklearn's digits count 0..16 pixels per 4 x 4 block of the original scan


def load_digits_dataset(image_size: int | None = None, channels: int | None = None, name: str | None = None) -> ImageDataset:
    """scikit-learn's digits as an ImageDataset.

    Images are pixel/16 in [0, 1], optionally resized (bilinear) to image_size x image_size and repeated to
    3 channels, then normalised with DIGITS_MEAN/DIGITS_STD. Default 1 x 8 x 8.
    sample_ids ``digits/00000`` ... ``digits/01796``; records keep the ``label`` column (0-9, for evaluation
    only). The version hashes the original pixel values and ids, so it does not depend on image_size/channels.
    """
    channels = 1 if channels is None else channels
    image_size = DIGITS_SIZE if image_size is None else image_size
    check_image_options(image_size, channels)
    bunch = load_digits()
    raw = bunch.images.astype(np.uint8)  # N x 8 x 8, integers 0..16
    sample_ids = [f"digits/{i:05d}" for i in range(len(raw))]
    images = torch.from_numpy(raw).to(torch.float32).div_(_DIGITS_MAX).unsqueeze(1)
    if image_size != DIGITS_SIZE:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = ((images - DIGITS_MEAN[0]) / DIGITS_STD[0]).expand(-1, channels, -1, -1).contiguous()
    records = pd.DataFrame({"sample_id": sample_ids, "path": None, "label": bunch.target.astype(np.int64), "error": None})
    return ImageDataset(
        images,
        sample_ids,
        records,
        name=name or "digits",
        version=tensors_version(np.concatenate([raw.reshape(len(raw), -1), bunch.target[:, None].astype(np.uint8)], 1), sample_ids),
        mean=DIGITS_MEAN * channels,
        std=DIGITS_STD * channels,
        source="digits",
    )
