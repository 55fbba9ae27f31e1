"""Findings of a scored dataset (duplicates, outliers, fairness) and their pictures."""
from __future__ import annotations

from typing import Annotated, Any, Optional, Tuple

import pandas as pd
from PIL import Image
from torch import nn
from zenml import ArtifactConfig, step
from zenml.types import HTMLString

from influencegate.audit import find_issues as find_issues_in, open_dataset, summary_with_findings
from influencegate.integrations.zenml.approvals import SCORES_ARTIFACT
from influencegate.integrations.zenml.tables import TableMaterializer
from influencegate.report import findings_figures


@step(output_materializers={"fairness_audit": TableMaterializer, "duplicate_groups": TableMaterializer})
def find_issues(dataset: dict, encoder: nn.Module, scores: pd.DataFrame, findings: Optional[dict[str, Any]] = None,
                device: str = "cpu") -> Tuple[
        Annotated[pd.DataFrame, ArtifactConfig(name=SCORES_ARTIFACT)],
        Annotated[dict, "audit_summary"],
        Annotated[pd.DataFrame, "fairness_audit"],
        Annotated[pd.DataFrame, "duplicate_groups"],
        Annotated[dict, "findings_text"]]:
    """Duplicates, outliers and the fairness audit (`findings`: FindingsConfig fields, YAML-style).

    Returns the scores table with its finding columns (docs/design.md section 2), the summary the gate checks
    (summary statistics + findings metrics), the per-group fairness table, the duplicate groups and
    plain-language texts per finding.
    """
    found = find_issues_in(open_dataset(dataset), encoder, scores, findings, device=device)
    return (found.table, summary_with_findings(found.table, found.metrics), found.fairness, found.duplicate_groups,
            found.texts)


@step
def render_findings(dataset: dict, encoder: nn.Module, scores: pd.DataFrame, summary: dict, texts: dict,
                    groups: Optional[list[str]] = None, device: str = "cpu") -> Tuple[
        Annotated[Image.Image, "duplicate_gallery"],
        Annotated[Image.Image, "outlier_gallery"],
        Annotated[Image.Image, "group_histograms"],
        Annotated[Image.Image, "embedding_map"],
        Annotated[HTMLString, "findings_report"]]:
    """Pictures of the findings and one HTML page with all of them (see influencegate.report.findings_figures)."""
    figures = findings_figures.render_all(open_dataset(dataset), encoder, scores, groups or [], device=device)
    html = findings_figures.html_summary(f"{dataset['name']} @ {dataset['version'][:12]}", summary, texts, figures)
    return (figures["duplicate_gallery"], figures["outlier_gallery"], figures["group_histograms"],
            figures["embedding_map"], HTMLString(html))
