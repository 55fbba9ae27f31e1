"""The Great Expectations 1.x gate: validate a scores table and its one-row summary, write Data Docs, decide.

GE is called directly (ZenML's GE integration only supports GE < 1.0). The gate FAILS CLOSED: an exception
anywhere, a missing column, a missing or non-finite summary metric, or an expectation without a result
means "rejected", with the reason written into the decision.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from influencegate import resources
from influencegate.data import storage
from influencegate.findings.registry import suite_with_findings

# Telemetry stays off unless the user turned it on explicitly (GE reads this at import time).
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

TABLES = ("scores", "summary")
#: The packaged default suite (``influencegate/resources/expectations/default.json``).
DEFAULT_SUITE = resources.path(resources.DEFAULT_SUITE)


def load_suite(suite: str | Path | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The suite as a dict ``{"name", "meta", "tables": {"scores": [...], "summary": [...]}}``.

    suite: a JSON file (a local path or an fsspec URL such as ``s3://bucket/suite.json``, read through
    ``influencegate.data.storage``), an already-loaded mapping, or None for the packaged default suite.
    Each expectation is ``{"type": <GE snake_case type>, "kwargs": {...}, "meta": {"why": ...}}``.
    ``meta.path`` records where the file was read (credentials in a URL removed).
    Raises ValueError for a file that is missing, not JSON, or without expectations (StorageError, a
    ValueError, when a URL's scheme has no driver); OSError when a store refuses the read.
    """
    if isinstance(suite, Mapping):
        data = dict(suite)
    else:
        location = os.fspath(suite) if suite else str(DEFAULT_SUITE)
        shown = storage.redact(location)
        if not storage.is_file(location):
            raise ValueError(f"expectation suite not found: {shown!r}")
        try:
            data = json.loads(storage.read_text(location))
        except json.JSONDecodeError as exc:
            raise ValueError(f"expectation suite {shown!r} is not valid JSON: {exc}") from exc
        data.setdefault("meta", {})["path"] = shown
    tables = data.get("tables") or {}
    unknown = sorted(set(tables) - set(TABLES))
    if unknown or not any(tables.get(t) for t in TABLES):
        raise ValueError(f"suite {data.get('name')!r} needs expectations under tables.scores/tables.summary"
                         + (f" (unknown tables {unknown})" if unknown else ""))
    data.setdefault("name", "unnamed_suite")
    return data


def suite_hash(suite: Mapping[str, Any]) -> str:
    """sha256 (first 16 hex) of the suite's name and expectations, canonical JSON: changes iff the rules do."""
    body = json.dumps({"name": suite.get("name"), "tables": suite.get("tables")}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _jsonable(value: Any) -> Any:
    """Plain JSON types (NaN/inf become None, numpy scalars become numbers)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, TypeError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _expectation_name(table: str, spec: Mapping[str, Any]) -> str:
    column = spec.get("kwargs", {}).get("column")
    return f"{table}.{column}.{spec['type']}" if column else f"{table}.{spec['type']}"


def _with_presence_checks(suite: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The suite's expectations per table, plus a not-null check for every summary column it names
    (GE's between-expectations skip nulls, so a NaN metric would otherwise pass)."""
    tables = {t: [dict(e) for e in suite["tables"].get(t, [])] for t in TABLES}
    named = []
    for spec in tables["summary"]:
        column = spec.get("kwargs", {}).get("column")
        if column and column not in named:
            named.append(column)
    tables["summary"] = [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": c},
         "meta": {"why": f"The metric {c} must be present and finite (fail closed).", "auto": True}}
        for c in named
    ] + tables["summary"]
    return tables


def _observed(table: str, spec: Mapping[str, Any], result: Mapping[str, Any], frame: pd.DataFrame) -> Any:
    """The value the expectation looked at: the metric itself for the one-row summary, GE's observed value,
    or the unexpected count/percent for column-map expectations on the scores table."""
    column = spec.get("kwargs", {}).get("column")
    if table == "summary" and column:
        return frame[column].iloc[0] if column in frame.columns and len(frame) else None
    if "observed_value" in result:
        return result["observed_value"]
    if "unexpected_count" in result:
        return {"unexpected_count": result.get("unexpected_count"),
                "unexpected_percent": result.get("unexpected_percent")}
    return None


def _result_for(spec: Mapping[str, Any], results: list[Any]) -> Any:
    """Take (and remove) the result of `spec` from `results`: GE does not keep the suite's order."""
    wanted = dict(spec.get("kwargs", {}))
    for i, result in enumerate(results):
        config = result.expectation_config
        if config.type == spec["type"] and all(config.kwargs.get(k) == v for k, v in wanted.items()):
            return results.pop(i)
    raise RuntimeError(f"no validation result for expectation {spec['type']} {wanted}")


def _validate_table(context: Any, table: str, frame: pd.DataFrame, specs: list[dict[str, Any]],
                    suite_name: str) -> list[dict[str, Any]]:
    """Run one table's expectations through a GE checkpoint (which also updates Data Docs)."""
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    source = context.data_sources.add_pandas(f"influencegate_{table}")
    batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all_rows")
    suite = gx.ExpectationSuite(name=f"{suite_name}.{table}")
    for spec in specs:
        suite.add_expectation(
            ExpectationConfiguration(type=spec["type"], kwargs=dict(spec.get("kwargs", {})),
                                     meta=dict(spec.get("meta", {}))).to_domain_obj())
    suite = context.suites.add(suite)
    validation = context.validation_definitions.add(gx.ValidationDefinition(name=f"validate_{table}", data=batch, suite=suite))
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name=f"gate_{table}", validation_definitions=[validation],
        actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")], result_format="SUMMARY"))
    run = checkpoint.run(batch_parameters={"dataframe": frame})
    results = [r for vr in run.run_results.values() for r in vr.results]
    if len(results) != len(specs):
        raise RuntimeError(f"{table}: {len(specs)} expectations but {len(results)} results")
    out = []
    for spec in specs:
        result = _result_for(spec, results)
        info = result.exception_info or {}
        raised = info.get("raised_exception") if isinstance(info, Mapping) else False
        message = info.get("exception_message") if isinstance(info, Mapping) else None
        if isinstance(info, Mapping) and not raised:  # GE keys exception info by metric id in some paths
            nested = [v for v in info.values() if isinstance(v, Mapping) and v.get("raised_exception")]
            raised, message = (True, nested[0].get("exception_message")) if nested else (raised, message)
        kwargs = dict(spec.get("kwargs", {}))
        column = kwargs.pop("column", None)
        out.append({
            "name": _expectation_name(table, spec),
            "table": table,
            "type": spec["type"],
            "column": column,
            "threshold": kwargs,
            "observed": _jsonable(_observed(table, spec, result.result or {}, frame)),
            "success": bool(result.success) and not raised,
            "error": message if raised else None,
            "why": spec.get("meta", {}).get("why"),
        })
    return out


def _context(docs_dir: Path) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.add_data_docs_site(site_name="influencegate", site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    return context


def run_gate(scores: pd.DataFrame, summary: pd.DataFrame, suite: str | Path | Mapping[str, Any] | None = None,
             *, dataset_name: str, dataset_version: str, scorer_config: Mapping[str, Any] | None = None,
             docs_dir: str | Path | None = None, extra_checks: list[Mapping[str, Any]] | None = None,
             findings: Any = None) -> dict[str, Any]:
    """Validate and decide. Returns the gate decision (docs/design.md section 2) as a JSON-able dict:

    dataset_name, dataset_version, approved (bool), status ("approved" | "rejected"), reasons (list of str),
    failed_expectations (names), expectations (name, table, type, column, threshold, observed, success, error,
    why), suite {name, hash, path}, scorer_config, data_docs (folder with index.html or None), started_at,
    finished_at (ISO 8601 UTC), summary (the summary row).
    findings: the FindingsConfig (or its mapping) that ran: a suite with `include_findings` gains the
    expectations of the registered findings it enables (influencegate.findings.suite_with_findings; None: the
    default findings).
    extra_checks: already-evaluated checks (e.g. Evidently drift tests) with the same keys; a failing one
    rejects the version too.
    Never raises: any exception becomes a rejection whose reason names it.
    """
    started = _now()
    decision: dict[str, Any] = {
        "dataset_name": dataset_name, "dataset_version": dataset_version, "approved": False,
        "status": "rejected", "reasons": [], "failed_expectations": [], "expectations": [],
        "suite": {"name": None, "hash": None, "path": None}, "scorer_config": _jsonable(dict(scorer_config or {})),
        "data_docs": None, "started_at": started, "finished_at": None,
        "summary": _jsonable(summary.iloc[0].to_dict()) if isinstance(summary, pd.DataFrame) and len(summary) else {},
    }
    try:
        spec = suite_with_findings(load_suite(suite), findings)
        decision["suite"] = {"name": spec["name"], "hash": suite_hash(spec), "path": spec.get("meta", {}).get("path")}
        if not isinstance(scores, pd.DataFrame) or not isinstance(summary, pd.DataFrame) or len(summary) != 1:
            raise ValueError("the gate needs a scores DataFrame and a one-row summary DataFrame")
        summary = summary.replace([math.inf, -math.inf], math.nan)
        docs = Path(docs_dir) if docs_dir else Path(tempfile.mkdtemp(prefix="influencegate_docs_"))
        docs.mkdir(parents=True, exist_ok=True)
        context = _context(docs)
        tables = _with_presence_checks(spec)
        frames = {"scores": scores, "summary": summary}
        for table in TABLES:
            if tables[table]:
                decision["expectations"] += _validate_table(context, table, frames[table], tables[table], spec["name"])
        decision["expectations"] += [_jsonable(dict(c)) for c in extra_checks or []]
        if (docs / "index.html").is_file():
            decision["data_docs"] = str(docs)
        failed = [e for e in decision["expectations"] if not e.get("success")]
        decision["failed_expectations"] = [e["name"] for e in failed]
        decision["reasons"] = [
            f"{e['name']}: observed {e.get('observed')!r}, threshold {e.get('threshold')}"
            + (f" (error: {e['error']})" if e.get("error") else "") for e in failed]
        decision["approved"] = bool(decision["expectations"]) and not failed
        if not decision["expectations"]:
            decision["reasons"].append("no expectation was evaluated")
    except Exception as exc:  # fail closed: whatever went wrong, the version is not approved
        decision["approved"] = False
        decision["reasons"].append(f"gate error: {type(exc).__name__}: {exc}")
    decision["status"] = "approved" if decision["approved"] else "rejected"
    decision["expectations"] = _jsonable(decision["expectations"])
    decision["finished_at"] = _now()
    return decision

