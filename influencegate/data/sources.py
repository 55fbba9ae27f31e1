"""Turning a folder or a manifest into the table of rows to load (no image file is opened here).

Each table has columns ``sample_id, path, <manifest columns>, error``: ``path`` is an absolute local path
or a URL (None when the manifest row has none), ``error`` None or the reason the row is unusable. Folders
and manifests may be local or in an object store (``influencegate.data.storage``).
"""
from __future__ import annotations

import io
import logging
from collections import Counter

import pandas as pd

from influencegate.data import storage
from influencegate.data.constants import FRAMES_COLUMN, IMAGE_EXTENSIONS
from influencegate.data.errors import DatasetError
from influencegate.data.folder_walk import describe_skipped, skipped_counts

logger = logging.getLogger(__name__)

RESERVED_COLUMNS = ("error", FRAMES_COLUMN)


def scan_folder(folder: str, skipped: Counter[str] | None = None) -> pd.DataFrame:
    """Every image file under ``folder`` (a local path or URL; recursive, by extension; symlinks, hidden and
    special files as ``storage.walk_files`` says).

    sample_id is the path relative to ``folder`` with POSIX separators; rows are sorted by sample_id.
    ``skipped`` (optional) receives the walk's counts of skipped entries and ``not_image``, the files without
    an image extension. Raises DatasetError when the folder holds no image file.
    """
    skipped = Counter() if skipped is None else skipped
    files = []
    for relative, location in storage.walk_files(folder, skipped):
        if storage.suffix(relative) in IMAGE_EXTENSIONS:
            files.append((relative, location, None))
        else:
            skipped["not_image"] += 1
    if sum(skipped.values()):
        logger.info("%s: skipped %s", storage.redact(folder), describe_skipped(skipped_counts(skipped)))
    if not files:
        raise DatasetError(f"no image files found in folder {storage.redact(folder)!r} "
                           f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    files = [_printable(*f) for f in files]
    files.sort()
    return pd.DataFrame({"sample_id": [f[0] for f in files], "path": [f[1] for f in files],
                         "error": [f[2] for f in files]})


def _printable(relative: str, location: str, error: str | None) -> tuple[str, str | None, str | None]:
    """A file row whose name is not valid UTF-8 (undecodable bytes on a POSIX disk) keeps its row, with the
    bytes shown as escapes, no path and an error: tables, Parquet and MLflow need UTF-8 text."""
    try:
        relative.encode("utf-8")
        return relative, location, error
    except UnicodeEncodeError:
        shown = relative.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return shown, None, "file name is not valid UTF-8 (rename the file)"


def read_table(location: str) -> pd.DataFrame:
    """A ``.csv``/``.jsonl``/``.parquet`` file (local path or URL) as a DataFrame; DatasetError when it
    cannot be read or its extension is unknown. csv keeps ``path``/``sample_id`` as strings."""
    suffix = storage.suffix(location)
    if suffix not in (".csv", ".jsonl", ".parquet"):
        raise DatasetError(f"unknown manifest extension {suffix!r} of {storage.redact(location)!r} "
                           "(use .csv, .parquet or .jsonl)")
    try:
        data = io.BytesIO(storage.read_bytes(location))
        if suffix == ".csv":
            return pd.read_csv(data, dtype={"path": str, "sample_id": str})
        if suffix == ".jsonl":
            return pd.read_json(data, lines=True, dtype=False, convert_dates=False)
        return pd.read_parquet(data, use_threads=False)  # pyarrow's thread pool can abort the process at exit
    except Exception as exc:  # the parsers and the stores raise many types for missing or malformed files
        raise DatasetError(f"cannot read manifest {storage.redact(location)!r}: {exc}") from exc


def read_manifest(manifest: str) -> pd.DataFrame:
    """The rows of a ``.csv``/``.parquet``/``.jsonl`` manifest (local path or URL), in manifest order.

    ``path`` is made absolute (relative paths are taken from the manifest's folder; URLs and absolute paths
    stay as written); ``sample_id`` is kept where given, else the path as written. Other columns are kept
    unchanged. A row without a path gets the error "empty path". Raises DatasetError for an unreadable
    manifest, a missing ``path`` column, a reserved column name, or no rows.
    """
    table = read_table(manifest)
    shown = storage.redact(manifest)
    if "path" not in table.columns:
        raise DatasetError(f"manifest {shown!r} has no 'path' column (columns: {', '.join(map(str, table.columns))})")
    reserved = [c for c in RESERVED_COLUMNS if c in table.columns]
    if reserved:
        raise DatasetError(f"manifest {shown!r} uses reserved column names: {', '.join(reserved)}")
    if table.empty:
        raise DatasetError(f"manifest {shown!r} has no rows")
    written = [None if pd.isna(p) or str(p).strip() == "" else str(p) for p in table["path"]]
    given = table["sample_id"] if "sample_id" in table.columns else pd.Series([None] * len(table))
    sample_ids = [
        str(s) if not pd.isna(s) else (w if w is not None else f"row:{i}")
        for i, (s, w) in enumerate(zip(given, written))
    ]
    folder = storage.parent(manifest)
    rows = table.drop(columns=[c for c in ("sample_id", "path") if c in table.columns]).reset_index(drop=True)
    rows.insert(0, "sample_id", sample_ids)
    rows.insert(1, "path", [None if w is None else w if storage.is_url(w) else storage.join(folder, w) for w in written])
    rows["error"] = [None if w is not None else "empty path" for w in written]
    return rows
