"""From rows and parts to an ImageDataset: file rows as readable parts, and the assembly of read samples.

Every source (folder, manifest, shards) ends here: its samples are read (``samples.read_parts``), each
decoded image streamed into a memory-mapped pixel store as it arrives (``store.PixelWriter``), duplicate
ids are marked, the version is hashed from every row, and the readable images' store rows become the dataset.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from influencegate.data import storage
from influencegate.data.constants import FRAMES_COLUMN, PROGRESS_MIN_FILES
from influencegate.data.dataset import ImageDataset
from influencegate.data.decode import SampleError, read_bytes
from influencegate.data.samples import Decoder, Part, Sample, read_parts
from influencegate.data.store import PixelWriter, StoredImages
from influencegate.data.versioning import row_fingerprint, rows_version

#: File rows per part: large enough to keep worker hand-offs cheap, small enough to spread over workers.
ROWS_PER_PART = 64


@dataclass
class FileRows:
    """A part made of rows that each point to one image file (a folder's files, a manifest's rows)."""

    rows: list[dict[str, Any]]

    def read(self, decoder: Decoder) -> Iterator[Sample]:
        """Read and decode each row's file; a missing or undecodable file becomes an error row."""
        for row in self.rows:
            columns = {k: v for k, v in row.items() if k not in ("sample_id", "path", "error")}
            error = row["error"] if isinstance(row["error"], str) else None
            data = None
            if row["path"] is not None:
                try:
                    data = read_bytes(row["path"])
                except SampleError as exc:
                    error = error or str(exc)
            yield decoder.sample(row["sample_id"], row["path"], columns, data, error)


def file_parts(rows: pd.DataFrame) -> list[FileRows]:
    """The rows of a folder scan or manifest (``sample_id, path, ..., error``) cut into FileRows parts."""
    records = rows.reset_index(drop=True).astype(object).where(rows.notna(), None).to_dict("records")
    return [FileRows(records[i:i + ROWS_PER_PART]) for i in range(0, len(records), ROWS_PER_PART)]


def mark_duplicates(samples: list[Sample]) -> None:
    """Set ``error`` (and drop the pixels) of every sample whose id already appeared in an earlier one."""
    first_row: dict[str, int] = {}
    for i, sample in enumerate(samples):
        if sample.sample_id in first_row:
            sample.error, sample.pixels = f"duplicate sample_id (first at row {first_row[sample.sample_id]})", None
        else:
            first_row[sample.sample_id] = i


def _hashed_path(path: str | None, root: str) -> str | None:
    """``path`` relative to ``root`` (POSIX) when inside it, else as is: what the version hash sees."""
    if path is None:
        return None
    return storage.relative_to(path, root) or path


def load_parts(
    parts: Sequence[Part],
    root: str,
    *,
    image_size: int,
    channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    name: str,
    source: str,
    workers: int = 0,
    total: int | None = None,
    skipped: Mapping[str, int] | None = None,
    store_dir: str | Path | None = None,
) -> ImageDataset:
    """Read every part (in ``workers`` DataLoader processes) and assemble an ImageDataset.

    Rows whose image is missing or undecodable keep their row with ``error`` set and are left out of the
    images. Images are kept as uint8 channels x image_size x image_size in a memory-mapped file under
    ``store_dir`` (default: a temporary folder, see ``influencegate.data.store``) and read back as float32
    normalised with ``mean``/``std`` (per channel, [0, 1] pixel units). root: the dataset's root (folder,
    manifest's folder, shards' folder), so that the version does not depend on where the dataset sits.
    total: expected row count, for the progress bar (None: unknown, e.g. shards).
    skipped: what a folder scan left out, by kind (``ImageDataset.skipped``). Each row's ``frames`` column
    holds its image file's frame count (None when not decoded).
    """
    def progress(items: Iterator[Any]) -> Iterator[Any]:
        return tqdm(items, total=total, desc=f"loading {name}", unit="img",
                    disable=total is not None and total <= PROGRESS_MIN_FILES)

    writer = PixelWriter((channels, image_size, image_size), store_dir)

    def store(sample: Sample) -> None:
        if sample.pixels is not None:
            sample.row, sample.pixels = writer.append(sample.pixels), None

    samples = read_parts(parts, Decoder(image_size, channels), workers, progress, sink=store)
    pixel_store = writer.finish()
    mark_duplicates(samples)
    records = pd.DataFrame([{"sample_id": s.sample_id, "path": s.path, **s.columns, FRAMES_COLUMN: s.frames,
                             "error": s.error} for s in samples],
                           columns=None if samples else ["sample_id", "path", FRAMES_COLUMN, "error"])
    records[FRAMES_COLUMN] = records[FRAMES_COLUMN].astype("Int64")
    fingerprints = [row_fingerprint(s.sample_id, _hashed_path(s.path, root), s.columns, s.digest) for s in samples]
    readable = [s for s in samples if s.error is None]
    rows = np.array([s.row for s in readable], dtype=np.int64)
    return ImageDataset(
        StoredImages(pixel_store, rows, mean, std),
        [s.sample_id for s in readable],
        records,
        name=name,
        version=rows_version(fingerprints),
        mean=mean,
        std=std,
        source=source,
        skipped=skipped,
    )
