"""What a tracked run says about itself: its name, the metrics that were not measured (and why), and its
description in markdown (verdict, counts, failing expectations, worst flagged samples).

Pure core: the tracking integration decides where these strings go.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Mapping

import pandas as pd

#: Metrics that exist only when the fairness audit ran on at least one group column.
FAIRNESS_METRICS = ("fairness_columns_audited", "fairness_min_p_value", "fairness_max_group_ratio", "fairness_flagged")
FAIRNESS_NOT_AUDITED = "fairness not audited: no group column was given (findings.groups is empty)"
#: The counts the description states, in this order.
COUNTS = ("n_rows", "n_scored", "n_errors", "n_duplicates", "n_outliers", "n_high_influence", "n_misaligned")


def run_name(dataset: str, version: str, approved: bool, when: datetime | None = None) -> str:
    """`<dataset>-<version[:8]>-<UTC yyyymmdd-HHMMSS>-<approved|rejected>`: two audits of the same version
    differ by their time, two versions by their id."""
    stamp = (when or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{dataset}-{str(version)[:8]}-{stamp}-{'approved' if approved else 'rejected'}"


def _missing(value: Any) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return value is None


def not_measured(summary: Mapping[str, Any]) -> dict[str, str]:
    """{metric: why it was not measured} for the summary's metrics that are missing or NaN: the fairness
    metrics when no group column was audited, the others when their finding was switched off or had nothing
    to compute on."""
    return {name: FAIRNESS_NOT_AUDITED if name in FAIRNESS_METRICS else
            "not computed: its finding was switched off or had no data"
            for name, value in summary.items() if _missing(value)}


def _count(value: Any) -> str:
    return "not measured" if _missing(value) else f"{int(float(value)):,}"


def description(decision: Mapping[str, Any], summary: Mapping[str, Any], review: pd.DataFrame | None = None,
                worst: int = 10) -> str:
    """The run description in markdown: the verdict with dataset and version, the counts (COUNTS present in
    `summary`), the failing expectations with observed value and threshold, the `worst` flagged sample ids of
    the review table (`review.flagged_rows`) and the metrics not measured."""
    status = str(decision.get("status") or "rejected").upper()
    lines = [f"## {status}: {decision.get('dataset_name')} @ {str(decision.get('dataset_version'))[:12]}", ""]
    counts = [f"{name.removeprefix('n_').replace('_', ' ')} **{_count(summary[name])}**"
              for name in COUNTS if name in summary]
    if counts:
        lines += ["Counts: " + ", ".join(counts) + ".", ""]
    failed = [e for e in decision.get("expectations") or [] if not e.get("success")]
    if failed:
        lines.append("Failing expectations:")
        lines += [f"- `{e.get('name')}`: observed `{e.get('observed')}`, threshold `{e.get('threshold')}`"
                  + (f" (error: {e['error']})" if e.get("error") else "") for e in failed]
        lines.append("")
    lines += [f"- {reason}" for reason in decision.get("reasons") or [] if str(reason).startswith("gate error")]
    if review is not None and len(review):
        shown = review.head(worst)
        lines.append(f"Worst flagged samples ({len(shown)} of {len(review)} in the `review` table):")
        lines += [f"- `{r.sample_id}`: {r.finding} (severity {r.severity:.3f})" for r in shown.itertuples()]
        lines.append("")
    else:
        lines += ["No sample was flagged.", ""]
    reasons: dict[str, list[str]] = {}
    for name, reason in not_measured(summary).items():
        reasons.setdefault(reason, []).append(f"`{name}`")
    lines += [f"Not measured ({reason}): {', '.join(names)}." for reason, names in reasons.items()]
    return "\n".join(lines).strip() + "\n"
