"""Findings of a scored dataset (every registered finding the config enables) and their pictures."""
from __future__ import annotations

from typing import Annotated, Any, Optional, Tuple

import numpy as np
import pandas as pd
from PIL import Image
from torch import nn
from zenml import ArtifactConfig, step
from zenml.types import HTMLString

from influencegate.findings import FindingsResult, artifacts, metric_catalog
from influencegate.findings.fairness import RESULT_COLUMNS as FAIRNESS_COLUMNS
from influencegate.findings.registry import as_config
from influencegate.findings.run import finding_tables
from influencegate.findings.outlier_reference import APPROVED
from influencegate.integrations.zenml.approvals import SCORES_ARTIFACT, approved_reference
from influencegate.integrations.zenml.tables import TableMaterializer
from influencegate.report import findings_figures
from influencegate.statistics import summary_with_findings
from influencegate.workflows.image_audit import version_embeddings, version_layout
from influencegate.workflows.image_audit import find_issues as find_issues_in
from influencegate.workflows.references import DatasetRef


@step
def embed_dataset(dataset: DatasetRef, encoder: nn.Module, device: str = "cpu", resume_dir: Optional[str] = None,
                  since: Optional[str] = None) -> Annotated[np.ndarray, "embeddings"]:
    """M x D float32: the encoder's outputs for the dataset's readable samples (one forward pass), computed once
    for `find_issues` and `render_findings` (each encodes the dataset itself when not given them).
    since: the resume directory of the version this one appends to: its embeddings are reused (same encoder,
    else ValueError) and only the new samples encoded; resume_dir: keep these for the next version
    (`workflows.image_audit.version_embeddings`)."""
    return version_embeddings(dataset.open(), encoder, device=device, resume_dir=resume_dir, since=since)


@step(output_materializers={"fairness_audit": TableMaterializer, "duplicate_groups": TableMaterializer})
def find_issues(dataset: DatasetRef, encoder: nn.Module, scores: pd.DataFrame, findings: Optional[dict[str, Any]] = None,
                device: str = "cpu", embeddings: Optional[np.ndarray] = None, resume_dir: Optional[str] = None,
                since: Optional[str] = None) -> Tuple[
        Annotated[pd.DataFrame, ArtifactConfig(name=SCORES_ARTIFACT)],
        Annotated[dict, "audit_summary"],
        Annotated[pd.DataFrame, "fairness_audit"],
        Annotated[pd.DataFrame, "duplicate_groups"],
        Annotated[dict, "findings_text"]]:
    """The registered findings the config enables (`findings`: FindingsConfig fields, YAML-style).

    Returns the scores table with its finding columns (docs/design.md section 2), the summary the gate checks
    (summary statistics + findings metrics), the fairness and duplicate-group tables (empty when the finding
    is off or, for fairness, when no group column is audited; every finding's tables and figures are in `render_findings`' finding_artifacts) and
    plain-language texts per finding. embeddings: `embed_dataset`'s output (None: encoded here). since /
    resume_dir: an appended version checks only what its new samples change against the whole version, from
    the findings state kept in `since`; resume_dir keeps this version's state (`findings.appended`).
    """
    findings, note = with_approved_reference(dataset.name, findings)
    found = find_issues_in(dataset.open(), encoder, scores, findings, device=device, embeddings=embeddings,
                           resume_dir=resume_dir, since=since)
    texts = {**found.texts, **({"outliers": f"{note} {found.texts['outliers']}"} if note else {})}
    return (found.table, summary_with_findings(found.table, found.metrics),
            found.tables.get("fairness", pd.DataFrame(columns=list(FAIRNESS_COLUMNS))),
            found.tables.get("duplicate_groups", pd.DataFrame()),
            texts)


def with_approved_reference(dataset_name: str, findings: Optional[dict[str, Any]]
                            ) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """(the findings config with `outliers: {reference: approved}` resolved to the resume directory of the last
    approved version of `dataset_name` that kept its image statistics, a note for the outliers text or None).
    With no such version yet, the reference is dropped (the version is its own) and the note says so."""
    outliers = (findings or {}).get("outliers")
    if not isinstance(outliers, dict) or outliers.get("reference") != APPROVED:
        return findings, None
    found = approved_reference(dataset_name)
    note = (f"Reference: the last approved version of {dataset_name!r} ({found})." if found else
            f"No approved version of {dataset_name!r} kept its image statistics yet (an audit with a resume "
            "directory keeps them), so this version is its own reference.")
    return {**findings, "outliers": {**outliers, "reference": found}}, note


@step
def render_findings(dataset: DatasetRef, encoder: nn.Module, scores: pd.DataFrame, summary: dict, texts: dict,
                    findings: Optional[dict[str, Any]] = None, device: str = "cpu",
                    embeddings: Optional[np.ndarray] = None, resume_dir: Optional[str] = None,
                    since: Optional[str] = None) -> Tuple[
        Annotated[dict, "finding_artifacts"],
        Annotated[Image.Image, "embedding_map"],
        Annotated[HTMLString, "findings_report"]]:
    """Each enabled finding's figures and tables by artifact path (`influencegate.findings.artifacts`), the
    t-SNE map of the embeddings (`embed_dataset`'s output; None: encoded here), and one HTML page with all of
    them (influencegate.report.findings_figures). since: an appended version reuses the previous version's
    map and places its new samples (no t-SNE); resume_dir keeps this map's layout for the next version
    (`workflows.image_audit.version_layout`)."""
    ds, config = dataset.open(), as_config(findings)
    layout = (version_layout(ds, scores, embeddings, resume_dir=resume_dir, since=since)
              if embeddings is not None else None)
    figures = findings_figures.render_all(ds, encoder, scores, device=device, config=config, embeddings=embeddings,
                                          layout=layout)
    found = FindingsResult(scores, summary, texts, finding_tables(scores, config), config)
    html = findings_figures.html_summary(f"{dataset.name} @ {dataset.version[:12]}", summary, texts, figures,
                                         described=metric_catalog())
    return artifacts(found, figures=figures), figures["embedding_map"], HTMLString(html)
