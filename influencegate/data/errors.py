"""The error raised when a dataset source itself is wrong."""
from __future__ import annotations


class DatasetError(ValueError):
    """A dataset source cannot be used at all: it does not exist, has an unknown extension, or a manifest
    lacks its ``path`` column. Problems with single samples never raise; they become ``error`` rows."""
