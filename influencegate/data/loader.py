"""``load_images``: one entry point for every dataset source, local or in an object store."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from influencegate.data import storage
from influencegate.data.constants import (
    CIFAR10_GRAY_MEAN,
    CIFAR10_GRAY_STD,
    CIFAR10_MEAN,
    CIFAR10_STD,
    DEFAULT_CHANNELS,
    DEFAULT_IMAGE_SIZE,
    MANIFEST_EXTENSIONS,
)
from influencegate.data.dataset import ImageDataset
from influencegate.data.digits import load_digits_dataset
from influencegate.data.errors import DatasetError, check_image_options
from influencegate.data.files import file_parts, load_parts
from influencegate.data.folder_walk import skipped_counts
from influencegate.data.samples import Part
from influencegate.data.shards import PARQUET_SUFFIX, is_tar, parquet_image_column, shard_parts
from influencegate.data.sources import read_manifest, scan_folder

DIGITS = "digits"
SOURCES_HELP = ("'digits', a folder of images, a .csv/.parquet/.jsonl manifest, WebDataset .tar shards or Parquet "
                "files with an image-bytes column (a file, a folder of them, or a pattern such as "
                "'s3://bucket/shards/{000000..000099}.tar'); local paths or s3://, gs://, memory://, file:// URLs")


def load_images(
    source: str | Path,
    image_size: int | None = None,
    channels: int | None = None,
    name: str | None = None,
    workers: int = 0,
    store_dir: str | Path | None = None,
) -> ImageDataset:
    """Load a dataset version, decoding every image once into a memory-mapped pixel store.

    source: "digits" (the embedded default, 1 x 8 x 8 unless resized); a folder of images (recursive); a
        ``.csv``/``.parquet``/``.jsonl`` manifest with a ``path`` column (see ``influencegate.data.sources``);
        WebDataset tar shards or Parquet files with an image-bytes column (see ``influencegate.data.shards``):
        one shard, a folder holding shards and no images, or a brace/glob pattern. Any of them local or an
        fsspec URL (``influencegate.data.storage``).
    image_size: output height = width in pixels (files and shards: default 32; digits: default 8).
    channels: 1 (grayscale) or 3 (RGB); default 3 for files, 1 for digits.
    name: dataset name; default "digits", the folder's name, the manifest's stem or the shards' folder name.
    workers: DataLoader processes that read and decode (0: this process).
    store_dir: folder for the temporary uint8 pixel file of files and shards (default
        ``$INFLUENCEGATE_STORE_DIR`` or the system's temp folder; see ``influencegate.data.store``); removed
        when the dataset is garbage collected. The digits stay in memory.

    Files are normalised with the CIFAR-10 mean/std, digits with DIGITS_MEAN/DIGITS_STD.
    Unusable samples (missing, corrupt, unsupported mode, duplicate sample_id, a broken shard...) never
    raise: they stay in ``records`` with ``error`` set and are left out of the images. A wrong source raises
    DatasetError.
    """
    if isinstance(source, str) and source == DIGITS:
        return load_digits_dataset(image_size, channels, name)
    channels = DEFAULT_CHANNELS if channels is None else channels
    image_size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    check_image_options(image_size, channels)
    if int(workers) < 0:
        raise DatasetError(f"workers must be >= 0, got {workers}")
    try:
        pattern = storage.is_pattern(source)
        location = str(source) if pattern else storage.normalise(source)
        parts, root, default_name, total, skipped = _plan(location, pattern)
    except (storage.StorageError, OSError) as exc:  # no driver for the scheme, no permission, no connection
        raise DatasetError(f"cannot read {storage.redact(source)!r}: {exc}") from None
    return load_parts(
        parts,
        root,
        image_size=image_size,
        channels=channels,
        mean=CIFAR10_MEAN if channels == 3 else CIFAR10_GRAY_MEAN,
        std=CIFAR10_STD if channels == 3 else CIFAR10_GRAY_STD,
        name=name or default_name,
        source=storage.redact(location),
        workers=int(workers),
        total=total,
        skipped=skipped,
        store_dir=store_dir,
    )


def _plan(source: str, pattern: bool) -> tuple[list[Part], str, str, int | None, dict[str, int]]:
    """(parts to read, root for location-free hashing, default name, row count if known, what a folder scan
    skipped by kind (empty for other sources)) of a source; pattern: whether it names several shards
    (``storage.is_pattern``)."""
    shown = storage.redact(source)
    if pattern:
        locations = storage.expand(source)
        if not any(storage.exists(location) for location in locations):  # stops at the first that exists
            raise DatasetError(f"no shard matches {shown!r}")
        return _shards(locations, shown)
    if not storage.exists(source):
        raise DatasetError(f"dataset source not found: {shown!r} (expected {SOURCES_HELP})")
    if storage.is_dir(source):
        skipped: Counter[str] = Counter()
        try:
            rows = scan_folder(source, skipped)
        except DatasetError:
            skipped = Counter()
            files = [location for _, location in storage.walk_files(source, skipped)]
            shards = sorted(loc for loc in files if is_tar(loc) or storage.suffix(loc) == PARQUET_SUFFIX)
            if not shards:
                raise
            skipped["not_image"] = len(files) - len(shards)
            parts, root, name, _, _ = _shards(shards, shown)
            return parts, root, name, None, skipped_counts(skipped)
        return file_parts(rows), source, storage.basename(source), len(rows), skipped_counts(skipped)
    if is_tar(source) or (storage.suffix(source) == PARQUET_SUFFIX and _has_image_column(source)):
        parts, root, _, total, skipped = _shards([source], shown)
        return parts, root, parts[0].shard, total, skipped
    if storage.suffix(source) in MANIFEST_EXTENSIONS:
        rows = read_manifest(source)
        stem = storage.basename(source).rsplit(".", 1)[0]
        return file_parts(rows), storage.parent(source), stem, len(rows), {}
    raise DatasetError(f"unknown dataset source extension {storage.suffix(source)!r} of {shown!r} "
                       f"(expected {SOURCES_HELP})")


def _has_image_column(location: str) -> bool:
    try:
        return parquet_image_column(location) is not None
    except Exception as exc:  # not a Parquet file: pyarrow raises several types
        raise DatasetError(f"cannot read Parquet file {storage.redact(location)!r}: {exc}") from exc


def _shards(locations: list[str], shown: str) -> tuple[list[Part], str, str, None, dict[str, int]]:
    try:
        parts, root = shard_parts(locations)
    except ValueError as exc:
        raise DatasetError(f"{shown}: {exc}") from None
    return parts, root, storage.basename(root) or "shards", None, {}
