"""Reading a dataset as a stream of decoded samples, part by part, optionally in DataLoader workers.

A source is cut into *parts* (a chunk of file rows, one WebDataset tar shard, one Parquet file); each part
reads its own bytes and yields one ``Sample`` per row, decoded or with the reason it could not be. Parts
are spread over ``workers`` DataLoader processes (part i on worker i mod workers), so decoding runs in
parallel and the main process only collects small uint8 tensors; at most one member per worker is held
encoded at a time, so memory does not grow with the number of parts. Each sample carries its order
(part index, position in the part), and the reader returns them in that order whatever the worker count.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from influencegate.data.decode import SampleError, decode_image


@dataclass
class Sample:
    """One row of a dataset version as read from its source.

    sample_id: stable id (file path relative to the root, or ``<shard>/<key>``). path: the file (or shard)
    it came from, a local path or URL; None for rows without one. columns: the row's other fields (manifest
    columns, caption, JSON metadata). digest: sha256 hex of the image bytes (None when unreadable).
    frames: the image file's frame count (``decode.Decoded``), None when it was not decoded.
    pixels: uint8 C x H x W, None when ``error`` is set (or once handed to a pixel store, see ``read_parts``).
    error: None or the short reason. row: the sample's row in the pixel store its pixels were written to.
    """

    sample_id: str
    path: str | None
    columns: dict[str, Any] = field(default_factory=dict)
    digest: str | None = None
    pixels: np.ndarray | None = None
    error: str | None = None
    frames: int | None = None
    row: int | None = None


@dataclass(frozen=True)
class Decoder:
    """Encoded image bytes -> uint8 array channels x image_size x image_size (see ``decode.decode_image``)."""

    image_size: int
    channels: int

    def sample(self, sample_id: str, path: str | None, columns: dict[str, Any], data: bytes | None,
               error: str | None = None) -> Sample:
        """The Sample of one row whose image bytes are ``data`` (None: unread, ``error`` says why).

        The digest is taken whenever there are bytes; decoding runs only for rows without an error.
        """
        digest = hashlib.sha256(data).hexdigest() if data is not None else None
        pixels, frames = None, None
        if data is not None and error is None:
            try:
                pixels, frames = decode_image(data, self.image_size, self.channels)
            except SampleError as exc:
                error = str(exc)
        return Sample(sample_id, path, columns, digest, pixels, error, frames)


class Part(Protocol):
    """A unit of reading work; ``read`` never raises for bad data: it yields error rows instead."""

    def read(self, decoder: Decoder) -> Iterator[Sample]:
        """The samples of this part, in a fixed order."""


Ordered = tuple[int, int, Sample]
#: Samples a worker hands over at once (one inter-process message each).
CHUNK = 64


class _PartStream(IterableDataset):
    """The samples of ``parts`` as lists of up to CHUNK (part index, position, Sample); each worker reads
    every n-th part."""

    def __init__(self, parts: Sequence[Part], decoder: Decoder) -> None:
        self.parts, self.decoder = list(parts), decoder

    def __iter__(self) -> Iterator[list[Ordered]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        chunk: list[Ordered] = []
        for index in range(worker, len(self.parts), workers):
            for position, sample in enumerate(self.parts[index].read(self.decoder)):
                chunk.append((index, position, sample))
                if len(chunk) == CHUNK:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk


def _unbatched(item: list[Ordered]) -> list[Ordered]:
    return item


def _sunk(item: Ordered, sink: Callable[[Sample], None]) -> Ordered:
    sink(item[2])
    return item


def read_parts(parts: Sequence[Part], decoder: Decoder, workers: int = 0,
               progress: Callable[[Iterator[Ordered]], Iterator[Ordered]] | None = None,
               sink: Callable[[Sample], None] | None = None) -> list[Sample]:
    """Every sample of ``parts``, ordered by (part, position), read in ``workers`` DataLoader processes
    (0: in this process). progress: optional wrapper of the stream of samples (a tqdm bar). sink: called on
    each sample as it arrives (in arrival order, before sorting), e.g. to move its pixels out of memory."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    stream = _PartStream(parts, decoder)
    workers = min(workers, len(stream.parts))
    chunks: Iterator[list[Ordered]] = iter(stream) if workers == 0 else iter(
        DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=_unbatched))
    items = (item for chunk in chunks for item in chunk)
    if sink is not None:
        items = (_sunk(item, sink) for item in items)
    collected = list(progress(items) if progress else items)
    collected.sort(key=lambda item: (item[0], item[1]))
    return [sample for _, _, sample in collected]
