"""The error raised when a dataset source itself is wrong."""
from __future__ import annotations

from influencegate.data.constants import CHANNELS


class DatasetError(ValueError):
    """A dataset source cannot be used at all: it does not exist, has an unknown extension, or a manifest
    lacks its ``path`` column. Problems with single samples never raise; they become ``error`` rows."""


def check_image_options(image_size: int, channels: int) -> None:
    """DatasetError unless the loaders' shape options are usable: image_size a positive side in pixels and
    channels one of CHANNELS (1 grey, 3 RGB)."""
    if channels not in CHANNELS:
        raise DatasetError(f"channels must be one of {' or '.join(map(str, CHANNELS))}, got {channels}")
    if image_size < 1:
        raise DatasetError(f"image_size must be positive, got {image_size}")


def require_readable(dataset: object) -> None:
    """DatasetError when a loaded dataset (an ImageDataset or a pair dataset: `name`, `records` with an `error`
    column, `len` = readable samples) has no readable sample at all: there is nothing to audit, and the first
    row's reason says why."""
    if len(dataset) > 0:  # type: ignore[arg-type]
        return
    records = getattr(dataset, "records")
    reasons = [r for r in records["error"].dropna()] if "error" in records else []
    first = f"; first: {str(reasons[0])[:200]}" if reasons else ""
    raise DatasetError(f"no readable sample in {getattr(dataset, 'name')!r} ({len(records)} rows, none could be "
                       f"read{first})")
