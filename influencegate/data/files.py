"""Reading, hashing and decoding the files a row table points to, into an ImageDataset."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path, PurePath

import pandas as pd
import torch
from tqdm.auto import tqdm

from influencegate.data.constants import PROGRESS_MIN_FILES
from influencegate.data.dataset import ImageDataset
from influencegate.data.decode import SampleError, decode_image, read_bytes
from influencegate.data.versioning import row_fingerprint, rows_version


def _hashed_path(path: str | None, root: Path) -> str | None:
    """``path`` relative to ``root`` (POSIX) when inside it, else absolute: what the version hash sees."""
    if path is None:
        return None
    relative = os.path.relpath(path, root)
    return path if relative.startswith("..") else PurePath(relative).as_posix()


def load_rows(
    rows: pd.DataFrame,
    root: Path,
    *,
    image_size: int,
    channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    name: str,
    source: str,
) -> ImageDataset:
    """Decode every error-free row of ``rows`` (columns ``sample_id, path, ..., error``) into an ImageDataset.

    Each file is read once: its bytes feed both the version hash and the decoder. Rows whose file is missing
    or undecodable get their ``error`` set and are left out of the tensor. Images become float32
    channels x image_size x image_size, normalised with ``mean``/``std`` (per channel, [0, 1] pixel units).
    root: the dataset's root folder (the folder itself, or the manifest's folder), for location-free hashing.
    """
    rows = rows.reset_index(drop=True).copy()
    extra = [c for c in rows.columns if c not in ("sample_id", "path", "error")]
    fingerprints, images, sample_ids = [], [], []
    progress = tqdm(rows.itertuples(index=False), total=len(rows), desc=f"loading {name}", unit="img",
                    disable=len(rows) <= PROGRESS_MIN_FILES)
    for i, row in enumerate(progress):
        record = dict(zip(rows.columns, row))
        digest, error = None, record["error"] if isinstance(record["error"], str) else None
        if record["path"] is not None:
            try:
                data = read_bytes(Path(record["path"]))
                digest = hashlib.sha256(data).hexdigest()
                if error is None:
                    images.append(decode_image(data, image_size, channels))
                    sample_ids.append(record["sample_id"])
            except SampleError as exc:
                error = error or str(exc)
        rows.at[i, "error"] = error
        fingerprints.append(
            row_fingerprint(record["sample_id"], _hashed_path(record["path"], root), {c: record[c] for c in extra}, digest)
        )
    shape = (len(images), channels, image_size, image_size)
    stacked = torch.stack(images) if images else torch.empty(shape)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return ImageDataset(
        (stacked - mean_t) / std_t,
        sample_ids,
        rows,
        name=name,
        version=rows_version(fingerprints),
        mean=mean,
        std=std,
        source=source,
    )
