"""The installed-package map is computed once per process, and ZenML's source lookup uses the cached one."""
from __future__ import annotations

import importlib.metadata

import pytest

from influencegate.integrations.zenml.package_lookup import cache_package_map, cached


@pytest.fixture
def counted_lookup(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """importlib.metadata.packages_distributions replaced by the real one with a call counter (restored after)."""
    real, calls = importlib.metadata.packages_distributions, []

    def counting() -> dict[str, list[str]]:
        calls.append(1)
        return real()

    monkeypatch.setattr(importlib.metadata, "packages_distributions", counting)
    return calls


def test_cached_answers_like_the_lookup_and_calls_it_once() -> None:
    calls: list[int] = []

    def lookup() -> dict[str, list[str]]:
        calls.append(1)
        return {"PIL": ["pillow"], "yaml": ["PyYAML"]}

    stand_in = cached(lookup)
    first = stand_in()
    first["PIL"].append("changed by a caller")
    first["new"] = ["x"]
    assert stand_in() == {"PIL": ["pillow"], "yaml": ["PyYAML"]}  # a caller's change does not reach the next
    assert len(calls) == 1


def test_cache_package_map_matches_the_real_map_and_is_idempotent(counted_lookup: list[int]) -> None:
    real = importlib.metadata.packages_distributions()
    counted_lookup.clear()
    cache_package_map()
    cache_package_map()
    assert importlib.metadata.packages_distributions() == real
    assert importlib.metadata.packages_distributions() == real
    assert len(counted_lookup) == 1


def test_zenml_source_lookup_uses_the_cached_map(counted_lookup: list[int]) -> None:
    from zenml.utils import source_utils

    cache_package_map()
    assert [source_utils._get_package_for_module(m) for m in ("pandas.core.frame", "pandas", "PIL.Image")] == [
        "pandas", "pandas", "pillow"]
    assert len(counted_lookup) == 1
