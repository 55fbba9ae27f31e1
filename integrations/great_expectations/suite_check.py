"""Check an expectation suite before any work: it parses, every expectation has a type Great Expectations
knows, and every column it names in the summary table is a metric the audit produces (the summary's columns
are known in advance: `influencegate.statistics.summary_stats` and the registered findings' metrics)."""
from __future__ import annotations

import re
from typing import Any, Mapping

import pandas as pd

from influencegate.integrations.great_expectations.gate import TABLES, load_suite


def _known_types() -> set[str]:
    import great_expectations.expectations  # noqa: F401  (registers the core expectations)
    from great_expectations.expectations.registry import list_registered_expectation_implementations

    return set(list_registered_expectation_implementations())


def summary_metrics() -> list[str]:
    """The summary table's column names, or patterns (a registered metric named with `<column>` matches any
    text there)."""
    from influencegate.findings import metric_catalog
    from influencegate.statistics import summary_stats

    empty = pd.DataFrame({"sample_id": [], "influence": [], "log_influence": [], "error": []})
    return [*summary_stats(empty), *metric_catalog()]


def _matches(column: str, names: list[str]) -> bool:
    return any(re.fullmatch(re.sub(r"<[^>]*>", ".+", re.escape(n)), column) for n in names)


def suite_problem(suite: str | Mapping[str, Any] | None, findings: Any = None) -> str | None:
    """One line naming the first problem of `suite` (a location or a mapping; None: the packaged default),
    or None when it can run. findings: the FindingsConfig (or mapping) of the audit (its expectations are added
    as the gate adds them)."""
    from influencegate.findings.registry import suite_with_findings

    try:
        spec = suite_with_findings(load_suite(suite), findings)
    except (ValueError, TypeError, AttributeError) as exc:
        return str(exc).splitlines()[0] if str(exc) else f"expectation suite unreadable: {type(exc).__name__}"
    name, known, metrics = spec.get("name"), _known_types(), summary_metrics()
    for table in TABLES:
        entries = spec["tables"].get(table) or []
        if not isinstance(entries, list):
            return f"suite {name!r}: tables.{table} must be a list of expectations"
        for entry in entries:
            kind = entry.get("type") if isinstance(entry, Mapping) else None
            if kind not in known:
                return (f"suite {name!r}: tables.{table} has unknown expectation type {kind!r} (Great Expectations "
                        "types are snake_case, e.g. expect_column_values_to_be_between)")
            kwargs = entry.get("kwargs") or {}
            if not isinstance(kwargs, Mapping):
                return f"suite {name!r}: {kind} in tables.{table} has kwargs that are not a mapping"
            column = kwargs.get("column")
            if table == "summary" and column is not None and not _matches(str(column), metrics):
                return (f"suite {name!r}: tables.summary names column {column!r}, which is no metric of the audit "
                        f"(e.g. {', '.join(metrics[:4])}, ...)")
    return None
