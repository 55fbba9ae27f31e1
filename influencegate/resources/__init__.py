"""Package data read at run time: the default expectation suites and the default run configs.

They ship inside the distribution (``influencegate/resources/...``) and are found with ``importlib.resources``,
never relative to a source file or the working directory. The top-level ``configs/`` folder of the repository
is a byte-identical copy for reading and copying (a test keeps the two equal); the code only reads these.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

AUDIT_CONFIG = "audit_digits.yaml"
PAIRS_CONFIG = "pairs_digits.yaml"
DEFAULT_SUITE = "expectations/default.json"
PAIRS_SUITE = "expectations/pairs.json"
#: Every packaged file, as POSIX paths relative to this package.
NAMES = (AUDIT_CONFIG, PAIRS_CONFIG, DEFAULT_SUITE, PAIRS_SUITE)


def folder() -> Path:
    """The local folder holding the packaged files. influencegate installs as plain files (a wheel, or an
    editable checkout), so ``importlib.resources`` gives a real folder; RuntimeError for a zipped install."""
    root = files(__name__)
    if not isinstance(root, Path):
        raise RuntimeError(f"influencegate's package data is not on the local file system ({root!r}): "
                           "install influencegate from its wheel")
    return root


def path(name: str) -> Path:
    """The packaged file ``name`` (POSIX, relative to this package, e.g. ``expectations/default.json``);
    FileNotFoundError when the package has no such file."""
    found = folder().joinpath(*name.split("/"))
    if not found.is_file():
        raise FileNotFoundError(f"influencegate ships no resource {name!r} (it has {', '.join(NAMES)})")
    return found
