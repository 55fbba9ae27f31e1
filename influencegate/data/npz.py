"""Arrays kept as one .npz file at any storage location (data.storage), read without pickles: nothing in such a
file can run code."""
from __future__ import annotations

import io

import numpy as np

from influencegate.data import storage


def read_npz(location: storage.Location) -> dict[str, np.ndarray] | None:
    """{name: array} of the .npz file at `location`; None when it is absent; ValueError naming the file (its
    credentials redacted) when it cannot be read (truncated, not an npz, an object array)."""
    try:
        data = storage.read_bytes(location)
    except FileNotFoundError:
        return None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            return {key: stored[key] for key in stored.files}
    except Exception as exc:
        raise ValueError(f"{storage.redact(location)} cannot be read ({type(exc).__name__}); delete it to "
                         "recompute it") from None


def write_npz(location: storage.Location, **arrays: np.ndarray) -> None:
    """Write `arrays` as one uncompressed .npz file at `location`."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    storage.write_bytes(location, buffer.getvalue())
