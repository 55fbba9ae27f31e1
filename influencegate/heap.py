"""Give freed heap memory back to the operating system (glibc `malloc_trim`), where loops that allocate and free
large temporaries of changing sizes would otherwise leave RSS growing with the data.

glibc raises its mmap threshold to the largest block freed so far, so later temporaries of tens of MiB come from
the heap; a small array kept alive between them (a batch's result) pins the heap, and the freed space stays
resident. Measured on the duplicate index's streaming pass over 100,000 32 px images: +5 KiB of RSS per image
without a trim. `release_heap` costs a walk of the heap's free chunks (well under a millisecond at these sizes);
call it every few batches of work, not per item: each call also leaves the next batch's temporaries to fault
their pages in afresh (the duplicate index's pass ran 12% faster trimming every 8 batches than after each one).
A no-op where glibc is absent.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_heap() -> bool:
    """Return the heap's free pages to the OS; True when glibc did (it found something to release)."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
