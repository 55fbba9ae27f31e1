"""The gate decision for people: one self-contained HTML page (verdict first, then every expectation with its
observed value, threshold and why; no network resource), a short JSON summary, and a verdict banner other
pages can carry.

Pure core: a decision is the dict `integrations.great_expectations.run_gate` returns.
"""
from __future__ import annotations

import json
import re
from html import escape
from typing import Any, Mapping

from influencegate.report.run_note import not_measured

BANNER_STYLE = (".verdict{padding:.6em 1em;color:#fff;border-radius:4px;margin:0 0 1em}"
                ".verdict.approved{background:#1a7f37}.verdict.rejected{background:#cf222e}")
STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
         "table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;"
         "vertical-align:top}tr.fail{background:#ffebe9}tr.na{background:#fff8c5}code{font-size:90%}" + BANNER_STYLE)


def _json(value: Any) -> str:
    return json.dumps(value, default=str)


def verdict_banner(decision: Mapping[str, Any]) -> str:
    """An HTML block stating the verdict, the dataset and version, and how many expectations failed."""
    status = "approved" if decision.get("approved") else "rejected"
    failed = len(decision.get("failed_expectations") or [])
    total = len(decision.get("expectations") or [])
    return (f"<div class='verdict {status}'><strong>{status.upper()}</strong>: "
            f"{escape(str(decision.get('dataset_name')))} @ {escape(str(decision.get('dataset_version')))}"
            f" &mdash; {failed} of {total} expectations failed</div>")


def with_verdict(page: str, decision: Mapping[str, Any]) -> str:
    """`page` (HTML) with the verdict banner (and its style) at the top of its body."""
    banner = f"<style>{BANNER_STYLE}</style>{verdict_banner(decision)}"
    match = re.search(r"<body[^>]*>", page, flags=re.IGNORECASE)
    return page[:match.end()] + banner + page[match.end():] if match else banner + page


def _row(expectation: Mapping[str, Any], missing: Mapping[str, str]) -> str:
    """One expectation as a table row: result, name, observed value (or why it was not measured), threshold,
    why (and the error, if it raised)."""
    e = expectation
    column = e.get("column") if e.get("table") == "summary" else None
    if column in missing:
        css, observed = "na", f"<em>not measured</em>: {escape(missing[column])}"
    else:
        css, observed = ("" if e.get("success") else "fail"), f"<code>{escape(_json(e.get('observed')))}</code>"
    why = escape(str(e.get("why") or "")) + (f" (error: {escape(str(e['error']))})" if e.get("error") else "")
    result = "pass" if e.get("success") else "<strong>FAIL</strong>"
    return (f"<tr class='{css}'><td>{result}</td><td><code>{escape(str(e.get('name')))}</code></td>"
            f"<td>{observed}</td><td><code>{escape(_json(e.get('threshold')))}</code></td><td>{why}</td></tr>")


def decision_html(decision: Mapping[str, Any]) -> str:
    """The gate decision as one self-contained HTML page: the verdict, the reasons, the suite and timestamps,
    then a table of every expectation (failed first) with its observed value, threshold, result and why.
    A summary metric that was not measured (`run_note.not_measured`) says so instead of showing a value."""
    missing = not_measured(decision.get("summary") or {})
    expectations = sorted(decision.get("expectations") or [], key=lambda e: bool(e.get("success")))
    rows = "".join(_row(e, missing) for e in expectations)
    reasons = "".join(f"<li>{escape(str(r))}</li>" for r in decision.get("reasons") or [])
    suite = decision.get("suite") or {}
    where = f", {escape(str(suite['path']))}" if suite.get("path") else ""
    title = f"Gate {str(decision.get('status')).upper()}: {decision.get('dataset_name')} @ {decision.get('dataset_version')}"
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>{verdict_banner(decision)}"
            + (f"<h2>Why it is rejected</h2><ul>{reasons}</ul>" if reasons else "")
            + f"<p>Suite <code>{escape(str(suite.get('name')))}</code> (hash <code>{escape(str(suite.get('hash')))}"
            f"</code>{where}), {escape(str(decision.get('started_at')))} to {escape(str(decision.get('finished_at')))}.</p>"
            "<h2>Expectations</h2><table><tr><th>result</th><th>expectation</th><th>observed</th><th>threshold</th>"
            f"<th>why</th></tr>{rows}</table>"
            "<p>Great Expectations' own Data Docs are kept next to this page (gate/data_docs).</p></body></html>")


def decision_summary(decision: Mapping[str, Any]) -> dict[str, Any]:
    """The decision in a few lines: verdict, dataset and version, suite name and hash, each failed expectation
    with observed value and threshold, the reasons, and the metrics that were not measured (and why)."""
    suite = decision.get("suite") or {}
    return {
        "status": decision.get("status"), "approved": bool(decision.get("approved")),
        "dataset_name": decision.get("dataset_name"), "dataset_version": decision.get("dataset_version"),
        "suite": {"name": suite.get("name"), "hash": suite.get("hash")},
        "failed": [{"name": e.get("name"), "observed": e.get("observed"), "threshold": e.get("threshold")}
                   for e in decision.get("expectations") or [] if not e.get("success")],
        "reasons": list(decision.get("reasons") or []),
        "not_measured": not_measured(decision.get("summary") or {}),
        "n_expectations": len(decision.get("expectations") or []),
    }
