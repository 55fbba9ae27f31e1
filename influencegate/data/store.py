"""Where a dataset's decoded images live: uint8 pixels in a memory-mapped file, or a small float tensor.

A loaded folder, manifest or set of shards never holds all its images in memory: the loaders stream every
decoded image (uint8 C x H x W) into one file (``PixelWriter``), and the dataset reads rows of it back
through a numpy memmap (``PixelStore``), turning only the rows asked for into normalised float32
(``StoredImages.batch``). Memory is one batch of float32 plus whatever pages of the file the OS caches.
In-memory data (``ImageDataset.from_tensors``, the digits) keeps its float tensor (``TensorImages``): its
values are arbitrary floats that uint8 cannot hold.

The file lives in a private temporary folder (under ``store_dir``, default ``$INFLUENCEGATE_STORE_DIR`` or
the system's temp folder) that is removed when the last dataset or view using it is garbage collected. A
pickled store carries its path, not its bytes: an unpickled copy (a DataLoader worker, another process on
the same machine) reads the same file while the process that created it keeps it alive. A process killed
outright (SIGKILL, out of memory) cannot remove its folder: the folder's name holds the host and the process
id, and the next store written in the same place removes the folders of this host's processes that are gone.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, Union

import numpy as np
import torch

from influencegate.data.mapped import MappedArray

#: Environment variable naming the folder for temporary pixel stores (default: the system's temp folder).
STORE_DIR_ENV = "INFLUENCEGATE_STORE_DIR"
#: A store folder is named FOLDER_PREFIX + "<host>-<pid>-" + a random suffix.
FOLDER_PREFIX = "influencegate-pixels-"
Rows = Union[slice, Sequence[int], np.ndarray, torch.Tensor]


class PixelStore:
    """uint8 pixels, N x C x H x W, in a file read through a memmap. path: the raw file (C order, no header).

    owned: this object created the file's temporary folder and removes it when it is garbage collected.
    """

    def __init__(self, path: str | Path, shape: tuple[int, int, int, int], owned: bool = False) -> None:
        self.path, self.shape = str(path), tuple(int(s) for s in shape)
        self._map: MappedArray | None = None
        if owned:
            weakref.finalize(self, shutil.rmtree, str(Path(path).parent), True)

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, index: slice | np.ndarray) -> np.ndarray:
        """uint8 pixels of the given rows (a slice or int64 positions), B x C x H x W, copied out of the file."""
        if self.shape[0] == 0:
            return np.empty((0, *self.shape[1:]), np.uint8)
        if self._map is None:
            self._map = MappedArray(self.path, np.uint8, self.shape)
        return self._map.read(index)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "shape": self.shape}  # the path, never the bytes nor the owner's finalizer

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.shape, self._map = state["path"], tuple(state["shape"]), None


class PixelWriter:
    """Streams uint8 images of one shape (C x H x W) into a new PixelStore file, in arrival order."""

    def __init__(self, image_shape: tuple[int, int, int], store_dir: str | Path | None = None) -> None:
        base = store_dir if store_dir is not None else os.environ.get(STORE_DIR_ENV) or None
        if base is not None:
            Path(base).mkdir(parents=True, exist_ok=True)
        remove_orphaned_stores(base)
        self.folder = tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{_host()}-{os.getpid()}-", dir=base)
        self.path = os.path.join(self.folder, "pixels.u8")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.count = 0
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed by finish()

    def append(self, pixels: np.ndarray) -> int:
        """Write one uint8 C x H x W image; returns its row in the store."""
        if pixels.shape != self.image_shape or pixels.dtype != np.uint8:
            raise ValueError(f"expected uint8 {self.image_shape}, got {pixels.dtype} {pixels.shape}")
        self._file.write(np.ascontiguousarray(pixels).tobytes())
        self.count += 1
        return self.count - 1

    def finish(self) -> PixelStore:
        """Close the file; the store owns (and eventually removes) its temporary folder."""
        self._file.close()
        return PixelStore(self.path, (self.count, *self.image_shape), owned=True)


def _host() -> str:
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_orphaned_stores(base: str | Path | None = None) -> list[str]:
    """Remove the store folders under `base` (default: the system's temp folder) that processes of this host
    left behind when they were killed (their process id no longer runs); returns the folders removed. Folders
    of other hosts (a shared store_dir) and of running processes are left alone."""
    root = Path(base if base is not None else tempfile.gettempdir())
    mine = f"{FOLDER_PREFIX}{_host()}-"
    removed = []
    for folder in root.glob(f"{mine}*"):
        pid = folder.name[len(mine):].split("-", 1)[0]
        if folder.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    return removed


class ImageSource(Protocol):
    """Readable images of a dataset, in dataset order; ``batch`` gives normalised float32."""

    shape: tuple[int, int, int, int]

    def batch(self, rows: Rows) -> torch.Tensor:
        """float32 B x C x H x W, normalised, of dataset rows ``rows``."""

    def take(self, rows: np.ndarray) -> ImageSource:
        """The images of ``rows`` (int64 positions), in that order, as a new source (no pixel copy if possible)."""


def _positions(rows: Rows, n: int) -> slice | np.ndarray:
    if isinstance(rows, slice):
        return rows
    index = np.asarray(rows.cpu() if isinstance(rows, torch.Tensor) else rows, dtype=np.int64).reshape(-1)
    return np.where(index < 0, index + n, index)


class StoredImages:
    """Images in a PixelStore: row i of the dataset is store row ``rows[i]``; normalised on read as
    (pixel / 255 - mean) / std per channel (mean, std: C values in [0, 1] pixel units)."""

    def __init__(self, store: PixelStore, rows: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> None:
        self.store, self.rows = store, np.asarray(rows, dtype=np.int64)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.shape = (len(self.rows), *store.shape[1:])

    def batch(self, rows: Rows) -> torch.Tensor:
        """Read the rows from the file (one contiguous slice when they are consecutive) and normalise them."""
        wanted = self.rows[_positions(rows, len(self.rows))]
        if len(wanted) > 1 and wanted[-1] - wanted[0] == len(wanted) - 1 and bool(np.all(np.diff(wanted) == 1)):
            pixels = self.store.rows(slice(int(wanted[0]), int(wanted[-1]) + 1))
        else:
            pixels = self.store.rows(wanted)
        x = torch.from_numpy(pixels).to(torch.float32).div_(255.0)
        view = (1, -1, 1, 1)
        return x.sub_(torch.tensor(self.mean).view(view)).div_(torch.tensor(self.std).view(view))

    def take(self, rows: np.ndarray) -> StoredImages:
        return StoredImages(self.store, self.rows[rows], self.mean, self.std)


class TensorImages:
    """Images held as one float32 tensor N x C x H x W, already normalised (small, in-memory data)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images.detach().to(torch.float32).contiguous()
        self.shape = tuple(int(s) for s in self.images.shape)

    def batch(self, rows: Rows) -> torch.Tensor:
        index = rows if isinstance(rows, slice) else torch.as_tensor(_positions(rows, self.shape[0]))
        return self.images[index]

    def take(self, rows: np.ndarray) -> TensorImages:
        return TensorImages(self.images[torch.as_tensor(rows, dtype=torch.long)])


class ImageArray:
    """A read-only, array-like view of a dataset's images for code written against N x C x H x W arrays:
    ``len``, ``shape``, ``ndim`` and ``view[rows]`` (a slice or int positions -> normalised float32 tensor)
    read only the rows asked for. ``np.asarray(view)`` reads them all (small data only)."""

    def __init__(self, source: ImageSource) -> None:
        self.source = source
        self.shape = tuple(source.shape)
        self.ndim = 4

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: Rows | int) -> torch.Tensor:
        if isinstance(rows, (int, np.integer)):
            return self.source.batch([int(rows)])[0]
        return self.source.batch(rows)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = self.source.batch(slice(None)).numpy()
        return array if dtype is None else array.astype(dtype)
