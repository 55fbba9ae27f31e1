"""Shards, the way pretraining data is stored: WebDataset tar files and Parquet files with image bytes.

WebDataset (as LAION and DataComp ship it): a tar of members ``<key>.<ext>`` where the members of one
sample are adjacent and share the key; the image is the member with an image extension (jpg, png, webp...),
``.txt`` becomes the ``caption`` column, ``.json`` (an object) adds its keys as columns, any other small
UTF-8 member a column named by its extension (``.cls`` -> ``cls``). Parquet: one row per sample, the image
in a binary column (``image``, ``jpg``, ``png``, ``img``, ``image_bytes``, ``bytes``) or in a struct with a
``bytes`` field (the Hugging Face ``Image`` feature); other columns (``caption``...) are kept.

Both are read streaming, member by member (tar) or batch by batch (Parquet), from a local path or a URL.
``sample_id`` is ``<shard>/<key>``: the shard's path relative to the shards' folder, without extension, and
the member key (tar) or the ``key``/``sample_id`` column or the row number (Parquet), so ids are stable
across runs, worker counts and machines. A member that cannot be decoded is a row with ``error`` set; a
shard that is missing or breaks off (truncated, corrupt) keeps every sample read before the break and adds
one error row for the rest, so a shard is never lost silently.
"""
from __future__ import annotations

import json
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from influencegate.data import storage
from influencegate.data.constants import FRAMES_COLUMN, IMAGE_EXTENSIONS
from influencegate.data.samples import Decoder, Sample

TAR_SUFFIXES = (".tar", ".tgz", ".tar.gz")
PARQUET_SUFFIX = ".parquet"
IMAGE_COLUMNS = ("image", "jpg", "png", "webp", "img", "image_bytes", "bytes")
#: Non-image tar members longer than this are not turned into columns.
MAX_TEXT_MEMBER = 65536
_IMAGE_EXTS = frozenset(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
_RESERVED = ("sample_id", "path", "error", FRAMES_COLUMN)
_PARQUET_BATCH = 256


def is_tar(location: str) -> bool:
    """True for a ``.tar``/``.tgz``/``.tar.gz`` location."""
    return str(location).lower().endswith(TAR_SUFFIXES)


def _shard_stem(relative: str) -> str:
    for suffix in (*TAR_SUFFIXES, PARQUET_SUFFIX):
        if relative.lower().endswith(suffix):
            return relative[: -len(suffix)]
    return relative


def _column_name(name: str) -> str:
    return f"meta_{name}" if name in _RESERVED else name


def _break_row(shard: str, location: str, count: int, exc: BaseException) -> Sample:
    """The error row of a shard that could not be read (further): after ``count`` samples."""
    what = "missing shard" if isinstance(exc, FileNotFoundError) and count == 0 else (
        f"unreadable shard after {count} samples: {type(exc).__name__}: {exc}")
    return Sample(f"{shard}/#rest" if count else shard, location, {}, None, None, what)


def split_member(name: str) -> tuple[str, str]:
    """(key, extension) of a tar member as WebDataset splits it: the extension starts at the first dot of
    the file name, the key keeps the folders (``a/b.c.jpg`` -> ``("a/b", "c.jpg")``); extension lower-case."""
    folder, base = posixpath.split(name)
    stem, _, ext = base.partition(".")
    return (posixpath.join(folder, stem) if folder else stem), ext.lower()


@dataclass
class TarShard:
    """One WebDataset tar shard. shard: its id prefix (relative path without extension); location: its
    local path or URL."""

    shard: str
    location: str

    def read(self, decoder: Decoder) -> Iterator[Sample]:
        """The samples of the shard in member order (see the module docstring for errors)."""
        count, key, members = 0, None, {}
        try:
            with storage.open_binary(self.location) as handle, tarfile.open(fileobj=handle, mode="r|*") as archive:
                for info in archive:
                    if not info.isfile() or posixpath.basename(info.name).startswith("."):
                        continue
                    member_key, ext = split_member(info.name)
                    if member_key != key and members:
                        yield self._sample(key, members, decoder)
                        count, members = count + 1, {}
                    key = member_key
                    members[ext] = archive.extractfile(info).read()
        except Exception as exc:  # missing object, truncated or corrupt archive, lost connection
            if members:
                yield self._sample(key, members, decoder, note="member cut off by a broken shard")
                count += 1
            yield _break_row(self.shard, self.location, count, exc)
            return
        if members:
            yield self._sample(key, members, decoder)

    def _sample(self, key: str, members: dict[str, bytes], decoder: Decoder, note: str | None = None) -> Sample:
        sample_id = f"{self.shard}/{key}"
        image_ext = next((ext for ext in members if ext.rsplit(".", 1)[-1] in _IMAGE_EXTS), None)
        columns: dict[str, Any] = {}
        error = note
        for ext, data in members.items():
            if ext == image_ext or len(data) > MAX_TEXT_MEMBER:
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if ext.rsplit(".", 1)[-1] == "json":
                try:
                    meta = json.loads(text)
                except json.JSONDecodeError as exc:
                    error = error or f"bad json member: {exc}"
                    continue
                if isinstance(meta, dict):
                    columns.update({_column_name(k): v if isinstance(v, (str, int, float, bool, type(None)))
                                    else json.dumps(v) for k, v in meta.items()})
            else:
                columns[_column_name("caption" if ext == "txt" else ext)] = text.strip()
        if image_ext is None:
            return Sample(sample_id, self.location, columns, None, None,
                          error or f"no image member (members: {', '.join(sorted(members))})")
        return decoder.sample(sample_id, self.location, columns, members[image_ext], error)


def image_column(schema: Any) -> str | None:
    """The name of the image-bytes column of a pyarrow schema (binary, or a struct with ``bytes``), or None."""
    import pyarrow as pa

    candidates = [f for f in schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)
                  or (pa.types.is_struct(f.type) and f.type.get_field_index("bytes") >= 0)]
    for name in IMAGE_COLUMNS:
        if any(f.name == name for f in candidates):
            return name
    return candidates[0].name if len(candidates) == 1 else None


def parquet_image_column(location: str) -> str | None:
    """The image-bytes column of a Parquet file (read from its footer only), or None when it has none."""
    import pyarrow.parquet as pq

    with storage.open_binary(location) as handle:
        return image_column(pq.ParquetFile(handle).schema_arrow)


@dataclass
class ParquetShard:
    """One Parquet file of images in a bytes column. shard: its id prefix; location: local path or URL."""

    shard: str
    location: str

    def read(self, decoder: Decoder) -> Iterator[Sample]:
        """The samples of the file in row order, batch by batch (see the module docstring for errors)."""
        import pyarrow.parquet as pq

        count = 0
        try:
            with storage.open_binary(self.location) as handle:
                table = pq.ParquetFile(handle)
                column = image_column(table.schema_arrow)
                if column is None:
                    raise ValueError("no image-bytes column (binary, or a struct with 'bytes')")
                for batch in table.iter_batches(batch_size=_PARQUET_BATCH, use_threads=False):
                    for row in batch.to_pylist():
                        yield self._sample(row, column, count, decoder)
                        count += 1
        except Exception as exc:  # missing object, corrupt footer or row group, lost connection
            yield _break_row(self.shard, self.location, count, exc)

    def _sample(self, row: dict[str, Any], column: str, number: int, decoder: Decoder) -> Sample:
        image = row.pop(column)
        data = image.get("bytes") if isinstance(image, dict) else image
        key = row.pop("key", None)
        key = row.pop("sample_id", None) if key is None else key
        columns = {_column_name(k): v for k, v in row.items()}
        sample_id = f"{self.shard}/{key if key is not None else f'{number:06d}'}"
        if data is None:
            return Sample(sample_id, self.location, columns, None, None, "empty image cell")
        return decoder.sample(sample_id, self.location, columns, bytes(data))


def shard_parts(locations: list[str]) -> tuple[list[TarShard | ParquetShard], str]:
    """(parts, root) for shard locations (tar or Parquet): the root is their common folder, ids are
    relative to it. Raises ValueError for a location that is neither."""
    folders = [storage.parent(loc) for loc in locations]
    root = folders[0]
    while any(storage.relative_to(folder, root) is None for folder in folders):
        if storage.parent(root) == root:
            raise ValueError("shards must all be local or all in one store")
        root = storage.parent(root)
    parts: list[TarShard | ParquetShard] = []
    for location in locations:
        shard = _shard_stem(storage.relative_to(location, root) or storage.basename(location))
        if is_tar(location):
            parts.append(TarShard(shard, location))
        elif storage.suffix(location) == PARQUET_SUFFIX:
            parts.append(ParquetShard(shard, location))
        else:
            raise ValueError(f"{storage.redact(location)!r} is not a shard (.tar, .tgz, .tar.gz or .parquet)")
    return parts, root
