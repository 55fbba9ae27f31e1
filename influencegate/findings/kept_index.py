"""The near-duplicate index (duplicate_index.ViewIndex) an audited version keeps in its resume directory, so that
a version appending to it indexes only its new images (findings.appended; issue 15 item 4):

    directory/duplicate_index          the stored thumbnails (ViewIndex's files; ".anchors", ".low", ".search"
                                       beside it: with search_bounds, so an old image's are never computed again)
    directory/duplicate_index.npz      codes (N x A x dim float16), each image's stored shapes and the settings
                                       they were made with (ViewMatch, code dim and seed)

Its rows are in the index's own order, which findings.npz maps to sample ids (version_state). On disk: 16.7 KB
an image of 32 px (1.67 GB for 100k, measured), 20.6 KB from 48 px up (the thumbnails stop at 48 px). Local
directories only (the files are appended to and memory-mapped); an appended version of a remote one indexes every
image again. Pure core.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict

import numpy as np

from influencegate.data import storage
from influencegate.data.npz import read_npz, write_npz
from influencegate.findings.duplicate_index import ViewIndex
from influencegate.findings.views import ViewMatch

INDEX = "duplicate_index"
SUFFIXES = ("", ".anchors", ".low", ".search")
SHAPES = ("thumbs", "anchors", "low", "search")


def local_path(directory: str | None) -> str | None:
    """directory/INDEX as a local path, None for no directory or a remote one."""
    if directory is None:
        return None
    location = storage.normalise(directory)
    if location.startswith("file://"):
        location = location[len("file://"):]
    elif storage.is_url(location):
        return None
    return os.path.join(location, INDEX)


def _settings(match: ViewMatch, dim: int, seed: int) -> str:
    return json.dumps({"match": asdict(match), "dim": int(dim), "seed": int(seed)}, sort_keys=True)


def keep(index: ViewIndex, directory: str) -> None:
    """Close the index's files (written at `local_path(directory)`) and keep its codes, shapes and settings
    beside them."""
    index.release()
    shapes = {name: np.asarray(shape or (), dtype=np.int64) for name, shape in index.shapes().items()}
    write_npz(index.path + ".npz", codes=index.codes(np.float16),
              settings=np.asarray(_settings(index.match, index.dim, index.seed)), **shapes)


def writable_path(directory: str | None) -> str | None:
    """`local_path(directory)` made ready for a new index (folder created, an earlier index's settings file
    removed: files half written are never read as an index); None for no directory or a remote one."""
    path = local_path(directory)
    if path is not None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.exists(path + ".npz"):
            os.remove(path + ".npz")
    return path


def reopen(since: str, directory: str | None, match: ViewMatch, dim: int, seed: int,
           rows: int) -> ViewIndex | None:
    """The index of `rows` images kept in `since` open to append, its files copied to `writable_path(directory)`
    (None: a temporary path; the same directory: appended in place) and cut to its kept rows; None when `since`
    kept none, or one of another number of rows (an empty one too), with a file shorter than its rows, or made
    with other settings."""
    source = local_path(since)
    stored = read_npz(source + ".npz") if source is not None else None
    if stored is None or any(name not in stored for name in SHAPES) or len(stored["codes"]) != rows or not rows \
            or str(stored["settings"]) != _settings(match, dim, seed):
        return None
    shapes = {name: tuple(int(v) for v in stored[name]) for name in SHAPES}
    # bytes of the kept rows per file: uint8 thumbnails, float16 anchors and bounds
    kept_bytes = {suffix: rows * int(np.prod(shapes[name])) * (1 if name == "thumbs" else 2)
                  for suffix, name in zip(SUFFIXES, SHAPES)}
    if not all(os.path.exists(source + s) and os.path.getsize(source + s) >= kept_bytes[s] for s in SUFFIXES):
        return None  # a file missing or shorter than its kept rows: never read as the index
    target = writable_path(directory)
    if target is None:
        handle, target = tempfile.mkstemp(suffix=".thumbs")
        os.close(handle)
    for suffix in SUFFIXES:
        if os.path.abspath(source) != os.path.abspath(target):
            shutil.copyfile(source + suffix, target + suffix)
        os.truncate(target + suffix, kept_bytes[suffix])  # rows an interrupted version appended
    return ViewIndex.reopen(match, target, stored["codes"], shapes, dim, seed)
