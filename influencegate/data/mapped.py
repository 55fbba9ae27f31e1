"""A read-only array in a raw file, read through a memory map that gives its pages back as it goes.

A plain `np.memmap` keeps every page it has touched in the process's resident set until it is unmapped: one
pass over a large file (the pixel store, the duplicate index's thumbnails and anchors) adds the whole file to
RSS, which looks like a leak and counts against container memory limits. `MappedArray.read` copies the rows
asked for; once RELEASE_BYTES have been read since the last release, it drops every page of the mapping from
this process (madvise MADV_DONTNEED). The pages stay in the kernel's page cache, so reading them again is a
minor fault, not a disk read; the resident share of the file stays below about RELEASE_BYTES.
"""
from __future__ import annotations

import math
import mmap
from pathlib import Path

import numpy as np

#: Bytes copied out between two releases of the mapping's pages (bounds its resident share; one madvise call
#: per this many bytes read, so random gathers of small rows do not pay one call per read).
RELEASE_BYTES = 32 << 20


class MappedArray:
    """shape-shaped `dtype` array stored C-order, without header, at `path` (at least prod(shape) items)."""

    def __init__(self, path: str | Path, dtype: np.dtype | type, shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.shape = str(path), np.dtype(dtype), tuple(int(s) for s in shape)
        self._mmap: mmap.mmap | None = None
        self._array: np.ndarray | None = None
        self._unreleased = 0

    def read(self, index: slice | np.ndarray) -> np.ndarray:
        """A copy of the rows `index` (a slice or int positions >= 0), shape (rows, *shape[1:])."""
        if math.prod(self.shape) == 0:
            return np.empty((0, *self.shape[1:]), self.dtype)[index]
        if self._array is None:
            with open(self.path, "rb") as handle:
                self._mmap = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            self._array = np.frombuffer(self._mmap, dtype=self.dtype, count=math.prod(self.shape)).reshape(self.shape)
        out = np.array(self._array[index])
        self._unreleased += out.nbytes
        if self._unreleased >= RELEASE_BYTES:
            self.release()
        return out

    def release(self) -> None:
        """Drop the mapping's resident pages from this process (Linux and macOS; elsewhere a no-op)."""
        if self._mmap is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._mmap.madvise(mmap.MADV_DONTNEED)
        self._unreleased = 0
