"""``load_images``: one entry point for every dataset source."""
from __future__ import annotations

from pathlib import Path

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
from influencegate.data.errors import DatasetError
from influencegate.data.files import load_rows
from influencegate.data.sources import mark_duplicates, read_manifest, scan_folder

DIGITS = "digits"


def load_images(
    source: str | Path, image_size: int | None = None, channels: int | None = None, name: str | None = None
) -> ImageDataset:
    """Load a dataset version, decoding every image eagerly into memory.

    source: "digits" (the embedded default, 1 x 8 x 8 unless resized), a folder of images (recursive), or a
        ``.csv``/``.parquet``/``.jsonl`` manifest with a ``path`` column (see ``influencegate.data.sources``).
    image_size: output height = width in pixels (folders/manifests: default 32; digits: default 8).
    channels: 1 (grayscale) or 3 (RGB); default 3 for files, 1 for digits.
    name: dataset name; default "digits", the folder's name or the manifest's stem.

    Files are normalised with the CIFAR-10 mean/std, digits with DIGITS_MEAN/DIGITS_STD.
    Unusable samples (missing, corrupt, unsupported mode, duplicate sample_id...) never raise: they stay
    in ``records`` with ``error`` set and are left out of the tensor. A wrong source raises DatasetError.
    """
    if isinstance(source, str) and source == DIGITS:
        return load_digits_dataset(image_size, channels, name)
    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetError(
            f"dataset source not found: {str(source)!r} (expected 'digits', a folder of images, "
            "or a .csv/.parquet/.jsonl manifest)"
        )
    channels = DEFAULT_CHANNELS if channels is None else channels
    if channels not in (1, 3):
        raise DatasetError(f"channels must be 1 or 3, got {channels}")
    image_size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    if image_size < 1:
        raise DatasetError(f"image_size must be positive, got {image_size}")
    if path.is_dir():
        rows, root = scan_folder(path), path.absolute()
    elif path.suffix.lower() in MANIFEST_EXTENSIONS:
        rows, root = read_manifest(path), path.parent.absolute()
    else:
        raise DatasetError(
            f"unknown dataset source extension {path.suffix!r} of {str(source)!r} "
            "(use a folder or a .csv/.parquet/.jsonl manifest)"
        )
    return load_rows(
        mark_duplicates(rows),
        root,
        image_size=image_size,
        channels=channels,
        mean=CIFAR10_MEAN if channels == 3 else CIFAR10_GRAY_MEAN,
        std=CIFAR10_STD if channels == 3 else CIFAR10_GRAY_STD,
        name=name or (path.name if path.is_dir() else path.stem),
        source=str(path.absolute()),
    )
