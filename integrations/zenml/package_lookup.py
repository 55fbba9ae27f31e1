"""The installed-package map that ZenML asks for on every artifact, computed once per process.

Each time ZenML records the source of an artifact's type or materializer that comes from an installed package
(a pandas table, a PIL image, a torch module), `zenml.utils.source_utils._get_package_for_module` calls
`importlib.metadata.packages_distributions()`, which reads the file list of every installed distribution: about
0.4-0.8 s on an environment with torch (half a million files) and about a dozen calls per audit, the same
in a full and in an appended (incremental) audit. What is installed does not change while a pipeline runs, so
`cache_package_map` keeps the first answer for the life of the process (each caller gets its own copy of the
mapping, so no caller can change another's).
"""
from __future__ import annotations

import importlib.metadata
from typing import Callable, Mapping

#: Marks the cached stand-in, so that caching twice wraps the original once.
CACHED_MARK = "_influencegate_cached"


def cached(lookup: Callable[[], Mapping[str, list[str]]]) -> Callable[[], dict[str, list[str]]]:
    """A stand-in for `lookup` (no arguments: top-level module name -> distribution names) that calls it on
    first use only and then returns copies of that first answer."""
    answer: dict[str, list[str]] = {}

    def packages_distributions() -> dict[str, list[str]]:
        if not answer:
            answer.update({module: list(names) for module, names in lookup().items()})
        return {module: list(names) for module, names in answer.items()}

    setattr(packages_distributions, CACHED_MARK, True)
    return packages_distributions


def cache_package_map() -> None:
    """Replace `importlib.metadata.packages_distributions` by its cached stand-in for this process (idempotent)."""
    current = importlib.metadata.packages_distributions
    if not getattr(current, CACHED_MARK, False):
        importlib.metadata.packages_distributions = cached(current)
