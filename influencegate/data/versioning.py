"""Content hashes that identify a dataset version independently of machine and folder location."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

VERSION_CHARS = 16


def _canonical(value: Any) -> Any:
    """A JSON-stable form of one table cell: missing values become None, numpy scalars Python scalars."""
    if value is None or (not isinstance(value, (str, bytes, list, dict, np.ndarray)) and pd.isna(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def row_fingerprint(sample_id: str, path: str | None, columns: Mapping[str, Any], file_sha256: str | None) -> str:
    """One manifest row as a canonical JSON line.

    path: the path relative to the dataset root (absolute only when the file lies outside it), POSIX
        separators, so that the line does not depend on where the dataset sits.
    columns: the row's other manifest columns (group attributes, labels, caption...).
    file_sha256: hex digest of the file's bytes, or None when the file could not be read.
    """
    payload = [sample_id, path, {k: _canonical(v) for k, v in sorted(columns.items())}, file_sha256]
    return json.dumps(payload, sort_keys=True, default=str, ensure_ascii=True)


def rows_version(fingerprints: Sequence[str]) -> str:
    """Version id of a dataset from its row fingerprints: sha256 over the sorted lines, first 16 hex chars.

    Sorting makes the id independent of file-system listing order.
    """
    digest = hashlib.sha256()
    for line in sorted(fingerprints):
        digest.update(line.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:VERSION_CHARS]


def tensors_version(array: torch.Tensor | np.ndarray, sample_ids: Sequence[str]) -> str:
    """Version id of in-memory data: sha256 over the sample ids, the array's shape, dtype and raw bytes."""
    values = array.detach().cpu().contiguous().numpy() if isinstance(array, torch.Tensor) else np.ascontiguousarray(array)
    digest = hashlib.sha256()
    digest.update(json.dumps([list(sample_ids), list(values.shape), str(values.dtype)]).encode("utf-8"))
    digest.update(values.tobytes())
    return digest.hexdigest()[:VERSION_CHARS]


def derived_version(parent_version: str, sample_ids: Sequence[str]) -> str:
    """Version id of a subset: sha256 over the parent's version and the chosen ids, in order."""
    digest = hashlib.sha256(json.dumps([parent_version, list(sample_ids)]).encode("utf-8"))
    return digest.hexdigest()[:VERSION_CHARS]
