"""Turning a folder or a manifest into the table of rows to load (no file is opened here).

Each table has columns ``sample_id, path, <manifest columns>, error``: ``path`` is an absolute path
string (None when the manifest row has none), ``error`` None or the reason the row is unusable.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from influencegate.data.constants import IMAGE_EXTENSIONS
from influencegate.data.errors import DatasetError

logger = logging.getLogger(__name__)

RESERVED_COLUMNS = ("error",)


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def scan_folder(folder: Path) -> pd.DataFrame:
    """Every image file under ``folder`` (recursive, by extension, hidden files and folders skipped).

    sample_id is the path relative to ``folder`` with POSIX separators; rows are sorted by sample_id.
    Raises DatasetError when the folder holds no image file.
    """
    files, skipped = [], 0
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if _is_hidden(relative) or path.is_dir():
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            files.append((relative.as_posix(), str(path.absolute())))
        else:
            skipped += 1
    if skipped:
        logger.info("%s: skipped %d files without an image extension", folder, skipped)
    if not files:
        raise DatasetError(
            f"no image files found in folder {str(folder)!r} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    files.sort()
    return pd.DataFrame({"sample_id": [f[0] for f in files], "path": [f[1] for f in files], "error": None})


def _read_table(manifest: Path) -> pd.DataFrame:
    suffix = manifest.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(manifest, dtype={"path": str, "sample_id": str})
        if suffix == ".jsonl":
            return pd.read_json(manifest, lines=True, dtype=False, convert_dates=False)
        if suffix == ".parquet":
            return pd.read_parquet(manifest)
    except Exception as exc:  # the parsers raise many types for malformed files
        raise DatasetError(f"cannot read manifest {str(manifest)!r}: {exc}") from exc
    raise DatasetError(f"unknown manifest extension {suffix!r} of {str(manifest)!r} (use .csv, .parquet or .jsonl)")


def read_manifest(manifest: Path) -> pd.DataFrame:
    """The rows of a ``.csv``/``.parquet``/``.jsonl`` manifest, in manifest order.

    ``path`` is made absolute (relative paths are taken from the manifest's folder); ``sample_id`` is kept
    where given, else the path as written. Other columns are kept unchanged. A row without a path gets the
    error "empty path". Raises DatasetError for an unreadable manifest, a missing ``path`` column, a reserved
    column name, or no rows.
    """
    table = _read_table(manifest)
    if "path" not in table.columns:
        raise DatasetError(
            f"manifest {str(manifest)!r} has no 'path' column (columns: {', '.join(map(str, table.columns))})"
        )
    reserved = [c for c in RESERVED_COLUMNS if c in table.columns]
    if reserved:
        raise DatasetError(f"manifest {str(manifest)!r} uses reserved column names: {', '.join(reserved)}")
    if table.empty:
        raise DatasetError(f"manifest {str(manifest)!r} has no rows")
    written = [None if pd.isna(p) or str(p).strip() == "" else str(p) for p in table["path"]]
    given = table["sample_id"] if "sample_id" in table.columns else pd.Series([None] * len(table))
    sample_ids = [
        str(s) if not pd.isna(s) else (w if w is not None else f"row:{i}")
        for i, (s, w) in enumerate(zip(given, written))
    ]
    rows = table.drop(columns=[c for c in ("sample_id", "path") if c in table.columns]).reset_index(drop=True)
    rows.insert(0, "sample_id", sample_ids)
    rows.insert(1, "path", [None if w is None else os.path.normpath(manifest.parent.absolute() / w) for w in written])
    rows["error"] = [None if w is not None else "empty path" for w in written]
    return rows


def mark_duplicates(rows: pd.DataFrame) -> pd.DataFrame:
    """Set ``error`` on every row whose sample_id already appeared in an earlier row (the first one is kept)."""
    rows = rows.copy()
    first_row: dict[str, int] = {}
    for i, sample_id in enumerate(rows["sample_id"]):
        if sample_id in first_row:
            rows.at[i, "error"] = f"duplicate sample_id (first at row {first_row[sample_id]})"
        else:
            first_row[sample_id] = i
    return rows
