"""A read-only array in a raw file, read through a memory map that gives its pages back after each read.

A plain `np.memmap` keeps every page it has touched in the process's resident set until it is unmapped: one
pass over a large file (the pixel store, the duplicate index's thumbnails) adds the whole file to RSS, which
looks like a leak and counts against container memory limits. `MappedArray.read` copies the rows asked for
and then drops the touched pages from this process (madvise MADV_DONTNEED); they stay in the kernel's page
cache, so reading them again is a minor fault, not a disk read.
"""
from __future__ import annotations

import math
import mmap
from pathlib import Path

import numpy as np


class MappedArray:
    """shape-shaped `dtype` array stored C-order, without header, at `path` (at least prod(shape) items)."""

    def __init__(self, path: str | Path, dtype: np.dtype | type, shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.shape = str(path), np.dtype(dtype), tuple(int(s) for s in shape)
        self._mmap: mmap.mmap | None = None
        self._array: np.ndarray | None = None

    def read(self, index: slice | np.ndarray) -> np.ndarray:
        """A copy of the rows `index` (a slice or int positions >= 0), shape (rows, *shape[1:])."""
        if self.shape[0] == 0 or math.prod(self.shape) == 0:
            return np.empty((0, *self.shape[1:]), self.dtype)[index]
        if self._array is None:
            with open(self.path, "rb") as handle:
                self._mmap = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            self._array = np.frombuffer(self._mmap, dtype=self.dtype, count=math.prod(self.shape)).reshape(self.shape)
        out = np.array(self._array[index])
        self._release(index)
        return out

    def _release(self, index: slice | np.ndarray) -> None:
        """Drop the pages of the rows between the smallest and the largest row read from this process."""
        if isinstance(index, slice):
            start, stop, _ = index.indices(self.shape[0])
        else:
            rows = np.asarray(index).reshape(-1)
            start, stop = (int(rows.min()), int(rows.max()) + 1) if rows.size else (0, 0)
        row_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize
        lo, hi = start * row_bytes // mmap.PAGESIZE * mmap.PAGESIZE, stop * row_bytes
        if hi > lo and hasattr(mmap, "MADV_DONTNEED"):  # Linux and macOS; elsewhere the pages stay mapped
            self._mmap.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
