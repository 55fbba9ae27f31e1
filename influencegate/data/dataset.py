"""ImageDataset: the decoded, normalised images of one dataset version plus the table of all its rows."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from influencegate.data.store import ImageArray, ImageSource, Rows, StoredImages, TensorImages
from influencegate.data.versioning import derived_version, tensors_version


def order_record_columns(records: pd.DataFrame) -> pd.DataFrame:
    """Return ``records`` with columns ``sample_id, path, <others in their order>, error``.

    Missing ``path``/``error`` columns are added as None; a fresh RangeIndex is set.
    """
    records = records.copy()
    for column in ("path", "error"):
        if column not in records.columns:
            records[column] = None
    others = [c for c in records.columns if c not in ("sample_id", "path", "error")]
    records = records[["sample_id", "path", *others, "error"]].reset_index(drop=True)
    for column in ("path", "error"):
        records[column] = records[column].astype(object).where(records[column].notna(), None)
    return records


class ImageDataset(Dataset):
    """The readable samples of a dataset version, and every row (readable or not) as a table.

    Images are decoded once when the dataset is built. Loaded files keep them as uint8 in a memory-mapped
    file (``influencegate.data.store``) and normalise only the rows read, so memory does not grow with N;
    in-memory data (``from_tensors``, the digits) keeps its float32 tensor. Reads give float32
    B x C x H x W in normalised units ((pixel in [0, 1] - mean) / std per channel): ``batch``, ``batches``,
    ``pixels`` (an array-like view) and ``__getitem__``.

    Attributes:
        name: human name of the dataset ("digits", the folder name, the manifest's stem...).
        version: content hash (16 hex chars) of the rows and file bytes; see ``influencegate.data.versioning``.
        records: all rows, columns ``sample_id, path, <manifest columns>, error``; ``path`` is an absolute
            path string (None for in-memory data), ``error`` None for readable samples, else a short reason.
        sample_ids: ids of the readable samples, in dataset order (row i of ``batch``).
        mean, std: per-channel normalisation constants (pixel units in [0, 1]), length C.
        source: where the data came from ("digits", an absolute folder/manifest path, or "tensors").
        skipped: for a folder, the count of each kind of entry its scan left out (hidden, symlinks pointing
            outside, symlinked folders, special files, unreadable folders, files without an image extension;
            ``influencegate.data.folder_walk``), zeros included; empty for other sources.
    """

    def __init__(
        self,
        images: torch.Tensor | ImageSource,
        sample_ids: Sequence[str],
        records: pd.DataFrame,
        *,
        name: str,
        version: str,
        mean: Sequence[float],
        std: Sequence[float],
        source: str,
        skipped: dict[str, int] | None = None,
    ) -> None:
        if len(images.shape) != 4:
            raise ValueError(f"images must be N x C x H x W, got shape {tuple(images.shape)}")
        sample_ids = [str(s) for s in sample_ids]
        if len(sample_ids) != images.shape[0]:
            raise ValueError(f"{len(sample_ids)} sample_ids for {images.shape[0]} images")
        if len(set(sample_ids)) != len(sample_ids):
            raise ValueError("sample_ids of readable samples must be unique")
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise ValueError(f"mean/std need {images.shape[1]} values (one per channel)")
        if "sample_id" not in records.columns:
            raise ValueError("records need a sample_id column")
        records = order_record_columns(records)
        fine = set(records.loc[records["error"].isna(), "sample_id"].astype(str))
        missing = [s for s in sample_ids if s not in fine]
        if missing:
            raise ValueError(f"sample_ids without an error-free row in records: {missing[:5]}")
        self._source: ImageSource = TensorImages(images) if isinstance(images, torch.Tensor) else images
        self.sample_ids = sample_ids
        self.records = records
        self.name = name
        self.version = version
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.source = source
        self.skipped = dict(skipped or {})
        self._index = {sid: i for i, sid in enumerate(sample_ids)}

    def __len__(self) -> int:
        """Number of readable samples."""
        return len(self.sample_ids)

    def __getitem__(self, i: int) -> tuple[str, torch.Tensor]:
        """(sample_id, normalised float32 image C x H x W) of readable sample i."""
        return self.sample_ids[i], self._source.batch([i])[0]

    def __getitems__(self, rows: list[int]) -> list[tuple[str, torch.Tensor]]:
        """``[self[i] for i in rows]`` read as one batch (what a DataLoader calls for a batch of indices)."""
        images = self._source.batch(rows)
        return [(self.sample_ids[i], images[k]) for k, i in enumerate(rows)]

    def batch(self, rows: Rows) -> torch.Tensor:
        """float32 B x C x H x W, normalised: the readable samples at ``rows`` (a slice or int positions)."""
        return self._source.batch(rows)

    def batches(self, batch_size: int = 1024) -> Iterator[torch.Tensor]:
        """All readable images in dataset order, ``batch_size`` at a time (float32 B x C x H x W, normalised)."""
        for start in range(0, len(self), batch_size):
            yield self._source.batch(slice(start, start + batch_size))

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, version={self.version!r}, samples={len(self)}, "
            f"failed={len(self.failed)}, image_shape={self.image_shape})"
        )

    @property
    def images(self) -> torch.Tensor:
        """All readable images at once, float32 N x C x H x W, normalised: N x C x H x W x 4 bytes of memory,
        for small data and tests; code that must scale reads ``batch``/``batches``/``pixels``."""
        return self._source.batch(slice(None))

    @property
    def pixels(self) -> ImageArray:
        """The readable images as an array-like N x C x H x W view that reads only the rows indexed."""
        return ImageArray(self._source)

    @property
    def store_path(self) -> str | None:
        """The memory-mapped uint8 file holding the images, None for in-memory images."""
        return self._source.store.path if isinstance(self._source, StoredImages) else None

    @property
    def failed(self) -> pd.DataFrame:
        """The rows of ``records`` whose ``error`` is set."""
        return self.records[self.records["error"].notna()]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        _, c, h, w = self._source.shape
        return int(c), int(h), int(w)

    def subset(self, sample_ids: Sequence[str]) -> ImageDataset:
        """A new dataset with the given readable samples, in the given order.

        Its records are those samples' rows; its version derives from this version and the chosen ids.
        Raises KeyError naming the ids that are not readable samples of this dataset.
        """
        sample_ids = [str(s) for s in sample_ids]
        unknown = [s for s in sample_ids if s not in self._index]
        if unknown:
            raise KeyError(f"{len(unknown)} sample_ids are not readable samples of {self.name!r}: {unknown[:5]}")
        rows = [self._index[s] for s in sample_ids]
        fine = self.records[self.records["error"].isna()].drop_duplicates("sample_id").set_index("sample_id", drop=False)
        return ImageDataset(
            self._source.take(np.asarray(rows, dtype=np.int64)),
            sample_ids,
            fine.loc[sample_ids],
            name=self.name,
            version=derived_version(self.version, sample_ids),
            mean=self.mean,
            std=self.std,
            source=self.source,
        )

    @classmethod
    def from_tensors(
        cls,
        images: torch.Tensor,
        sample_ids: Sequence[str],
        name: str = "tensors",
        records: pd.DataFrame | None = None,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> ImageDataset:
        """Wrap in-memory images (float32 N x C x H x W, already normalised) as a dataset.

        records: optional table with a ``sample_id`` column (extra columns such as group attributes are kept;
            it may hold extra error rows). Default: one row per sample with ``path`` and ``error`` None.
        mean, std: the normalisation that was applied (per channel, [0, 1] pixel units), used by
            ``denormalize``; default 0 and 1 (identity).
        The version is a hash of the tensor bytes and the ids.
        """
        sample_ids = [str(s) for s in sample_ids]
        channels = images.shape[1] if images.ndim == 4 else 0
        if records is None:
            records = pd.DataFrame({"sample_id": sample_ids})
        return cls(
            images,
            sample_ids,
            records,
            name=name,
            version=tensors_version(images.to(torch.float32), sample_ids),
            mean=mean if mean is not None else (0.0,) * channels,
            std=std if std is not None else (1.0,) * channels,
            source="tensors",
        )


def denormalize(images: torch.Tensor, dataset: ImageDataset) -> torch.Tensor:
    """Undo ``dataset``'s normalisation for display: images (N x C x H x W or C x H x W, normalised units)
    -> pixel intensities in [0, 1], clamped."""
    shape = (-1, 1, 1)
    mean = torch.tensor(dataset.mean, dtype=images.dtype, device=images.device).view(shape)
    std = torch.tensor(dataset.std, dtype=images.dtype, device=images.device).view(shape)
    return (images * std + mean).clamp(0.0, 1.0)
