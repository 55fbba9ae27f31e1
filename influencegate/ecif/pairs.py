"""The pairs ECIF scores: `PairSet` (images or frozen features with their captions, and the rows that cannot be
scored) and the default text encoder that turns captions into features."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from influencegate.data.dataset import ImageDataset

TextEncoder = Callable[[Sequence[str]], torch.Tensor]


@dataclass
class PairSet:
    """Image-text pairs: the scorable ones as tensors, the others as rows with an error.

    sample_ids, captions: M unique ids and M non-empty captions.
    images: M x C x H x W normalised images, or M x D precomputed frozen image features.
    paths: M paths (or None each); default all None.
    failed: rows that cannot be scored (columns sample_id, path, caption, error); they end up in the table.
    """

    sample_ids: list[str]
    captions: list[str]
    images: torch.Tensor
    paths: list[str | None] = field(default_factory=list)
    failed: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["sample_id", "path", "caption", "error"]))

    def __post_init__(self) -> None:
        self.sample_ids = [str(s) for s in self.sample_ids]
        self.captions = list(self.captions)
        self.paths = list(self.paths) or [None] * len(self.sample_ids)
        m = len(self.sample_ids)
        if not isinstance(self.images, torch.Tensor) or self.images.ndim not in (2, 4):
            raise ValueError("images must be a tensor M x C x H x W (images) or M x D (features)")
        if len(self.captions) != m or len(self.images) != m or len(self.paths) != m:
            raise ValueError(f"{m} sample ids, {len(self.captions)} captions, {len(self.images)} images, "
                             f"{len(self.paths)} paths: they must match")
        if len(set(self.sample_ids)) != m:
            raise ValueError("sample_ids must be unique")
        empty = [s for s, c in zip(self.sample_ids, self.captions) if not isinstance(c, str) or not c.strip()]
        if empty:
            raise ValueError(f"{len(empty)} pairs have no caption (e.g. {empty[:3]}); put them in `failed`")
        if not bool(torch.isfinite(self.images).all()):
            raise ValueError("images/features hold non-finite values")

    def __len__(self) -> int:
        """Number of scorable pairs M."""
        return len(self.sample_ids)

    @classmethod
    def from_dataset(cls, dataset: ImageDataset, caption_column: str = "caption") -> PairSet:
        """The readable samples of ``dataset`` that have a caption in ``records[caption_column]``; rows with
        an error or without a caption go to ``failed`` (error "missing caption" for the latter)."""
        records = dataset.records
        if caption_column not in records.columns:
            raise ValueError(f"dataset {dataset.name!r} has no {caption_column!r} column; image-text pairs need captions")
        readable = records[records["error"].isna()].drop_duplicates("sample_id").set_index("sample_id", drop=False)
        readable = readable.loc[dataset.sample_ids]
        has_caption = readable[caption_column].map(lambda c: isinstance(c, str) and bool(c.strip())).to_numpy()
        columns = ["sample_id", "path", caption_column, "error"]
        failed = pd.concat([records[records["error"].notna()][columns],
                            readable[~has_caption].assign(error="missing caption")[columns]], ignore_index=True)
        keep = readable[has_caption]
        return cls(keep["sample_id"].tolist(), keep[caption_column].tolist(),
                   dataset.batch(np.flatnonzero(has_caption)), keep["path"].tolist(),
                   failed.rename(columns={caption_column: "caption"}))


def default_text_encoder(device: str, batch_size: int) -> TextEncoder:
    """MiniLM (``influencegate.models.text.encode_texts``) on ``device``: captions -> N x 384 float32."""
    from influencegate.models.text import encode_texts

    return lambda captions: encode_texts(captions, batch_size=batch_size, device=device)


