"""ZenML steps of influencegate: thin, typed wrappers around the core and the integrations.

Use them in your own pipeline::

    from influencegate.steps import (load_dataset, load_or_pretrain_encoder, score_influence, find_issues,
                                     validate_and_gate)
"""
from influencegate.steps.data import load_dataset
from influencegate.steps.drift import compare_with_approved
from influencegate.steps.encoder import load_or_pretrain_encoder
from influencegate.steps.findings import embed_dataset, find_issues, render_findings
from influencegate.steps.pairs import load_pair_dataset, log_pairs_to_mlflow, render_pair_figures, score_pairs
from influencegate.steps.gate import record_approval, validate_and_gate
from influencegate.steps.scoring import render_figures, score_influence
from influencegate.steps.tracking import log_to_mlflow

__all__ = ["compare_with_approved", "embed_dataset", "find_issues", "load_dataset", "load_or_pretrain_encoder", "load_pair_dataset",
           "log_pairs_to_mlflow", "log_to_mlflow", "record_approval", "render_figures", "render_findings",
           "render_pair_figures", "score_influence", "score_pairs", "validate_and_gate"]
