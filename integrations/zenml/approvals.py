"""Approvals recorded as tagged ZenML artifacts, and the look-ups built on them.

Every audit records its gate decision as an artifact named DECISION_ARTIFACT, tagged
``influencegate``, ``dataset:<name>``, ``version:<version id>`` and ``approved`` or ``rejected``. The scores
table of the same pipeline run is the artifact named SCORES_ARTIFACT. So "the last approved version of a
dataset" is a tag query, and its scores are one more query on the producing run.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import pandas as pd

os.environ.setdefault("ZENML_ANALYTICS_OPT_IN", "false")

DECISION_ARTIFACT = "influencegate_gate_decision"
SCORES_ARTIFACT = "influencegate_scores"
BASE_TAG = "influencegate"


def approval_tags(decision: Mapping[str, Any]) -> list[str]:
    """The tags recorded with a decision: base tag, dataset, version id, status."""
    return [BASE_TAG, f"dataset:{decision.get('dataset_name')}", f"version:{decision.get('dataset_version')}",
            "approved" if decision.get("approved") else "rejected"]


def tag_current_output(decision: Mapping[str, Any]) -> list[str]:
    """Tag the calling step's (single) output artifact with `approval_tags`. Call inside a ZenML step only."""
    from zenml import add_tags

    tags = approval_tags(decision)
    add_tags(tags=tags, infer_artifact=True)
    return tags


def _decisions(dataset_name: str, approved_only: bool, size: int = 50) -> list[Any]:
    from zenml.client import Client

    from influencegate.integrations.zenml.store import open_store

    open_store()  # a first look-up may meet a new store that an audit is creating
    tags = [f"dataset:{dataset_name}"] + (["approved"] if approved_only else [])
    page = Client().list_artifact_versions(name=DECISION_ARTIFACT, tags=tags, sort_by="desc:created", size=size)
    return list(page.items)


def last_approved(dataset_name: str) -> dict[str, Any] | None:
    """The last approved version of `dataset_name`: {"decision": dict, "scores": DataFrame, "run_id",
    "artifact_version_id"}, or None when none was approved (or its scores cannot be found)."""
    from zenml.client import Client

    for version in _decisions(dataset_name, approved_only=True, size=10):
        run_id = version.producer_pipeline_run_id
        if run_id is None:
            continue
        scores = Client().list_artifact_versions(name=SCORES_ARTIFACT, pipeline_run=run_id, size=1).items
        if not scores:
            continue
        return {"decision": version.load(), "scores": scores[0].load(), "run_id": str(run_id),
                "artifact_version_id": str(version.id)}
    return None


def approved_reference(dataset_name: str) -> str | None:
    """The resume directory of the last approved version of `dataset_name` that kept its image statistics there
    (findings.outlier_reference.STATISTICS_FILE), for `outliers: {reference: approved}`; None when there is none."""
    from influencegate.data import storage
    from influencegate.findings.outlier_reference import STATISTICS_FILE

    for version in _decisions(dataset_name, approved_only=True, size=10):
        resume_dir = version.load().get("resume_dir")
        if resume_dir and storage.exists(storage.join(storage.normalise(resume_dir), STATISTICS_FILE)):
            return str(resume_dir)
    return None


def list_versions(dataset_name: str, limit: int = 50) -> pd.DataFrame:
    """Audits of `dataset_name`, newest first: created, dataset_version, status, latest_approved (bool, the
    version a consumer should train on), failed expectations, pipeline run id, MLflow run id."""
    rows = []
    for version in _decisions(dataset_name, approved_only=False, size=limit):
        decision = version.load()
        rows.append({"created": version.created, "dataset_version": decision.get("dataset_version"),
                     "status": decision.get("status"), "failed": ", ".join(decision.get("failed_expectations") or []),
                     "pipeline_run_id": str(version.producer_pipeline_run_id),
                     "mlflow_run_id": (decision.get("mlflow") or {}).get("run_id")})
    table = pd.DataFrame(rows, columns=["created", "dataset_version", "status", "failed", "pipeline_run_id",
                                        "mlflow_run_id"])
    approved = table.index[table["status"] == "approved"]
    table.insert(3, "latest_approved", table.index == (approved[0] if len(approved) else -1))
    return table
