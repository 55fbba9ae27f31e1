"""Validate the scores with the expectation suite and decide (fails closed); record the approval."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Optional, Tuple

import pandas as pd
from zenml import ArtifactConfig, step
from zenml.types import HTMLString

from influencegate.data.storage import redact
from influencegate.integrations.great_expectations import run_gate
from influencegate.integrations.zenml.approvals import BASE_TAG, DECISION_ARTIFACT, tag_current_output
from influencegate.report.gate_report import decision_html
from influencegate.workflows.references import DatasetRef


@step(enable_cache=False)
def validate_and_gate(dataset: DatasetRef, scores: pd.DataFrame, summary: dict, scoring_info: dict,
                      drift: Optional[dict] = None, suite: Optional[str] = None, drift_blocks: bool = False,
                      findings: Optional[dict] = None, resume_dir: Optional[str] = None) -> Tuple[
        Annotated[dict, "gate_decision"], Annotated[HTMLString, "gate_report"], Annotated[Path, "data_docs"]]:
    """Run the Great Expectations suite (`suite`: a JSON file, local path or URL; default the packaged
    expectations/default.json) on the scores table and the one-row summary. With `drift_blocks`, failing
    Evidently drift tests reject too. findings: the FindingsConfig fields that ran (a suite with
    include_findings adds the expectations of the findings they enable; default: the default findings).
    resume_dir: where this version's state is kept (recorded with any credentials in a URL removed, so that a
    later audit's `outliers: {reference: approved}` finds this version's image statistics once it is approved;
    the store's usual credential chain then reads it).

    Returns the decision (docs/design.md section 2), its HTML rendering and the GE Data Docs folder.
    """
    docs = Path(tempfile.mkdtemp(prefix="influencegate_data_docs_"))
    extra = [t for t in (drift or {}).get("tests", [])] if drift_blocks else None
    decision = run_gate(scores, pd.DataFrame([summary]), suite, dataset_name=dataset.name,
                        dataset_version=dataset.version, scorer_config=scoring_info.get("config", {}),
                        docs_dir=docs, extra_checks=extra, findings=findings)
    decision["dataset"] = {key: dataset.logged()[key] for key in ("n_rows", "n_readable", "n_failed", "skipped")}
    decision["incremental"] = (scoring_info.get("resume") or {}).get("incremental")
    decision["resume_dir"] = redact(resume_dir) if resume_dir else None  # logged: no credentials in it
    return decision, HTMLString(decision_html(decision)), docs


@step(enable_cache=False)
def record_approval(decision: dict, mlflow_run: Optional[dict] = None) -> Annotated[
        dict, ArtifactConfig(name=DECISION_ARTIFACT, tags=[BASE_TAG])]:
    """Record the decision as the tagged ZenML artifact `influencegate_gate_decision` (tags: dataset:<name>,
    version:<id>, approved|rejected), with the MLflow run it was logged to."""
    record = {**decision, "mlflow": mlflow_run or {}}
    tag_current_output(record)
    return record
