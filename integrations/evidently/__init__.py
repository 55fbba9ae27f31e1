"""Evidently 0.7 drift report of score distributions against the last approved dataset version."""
from influencegate.integrations.evidently.drift import DRIFT_COLUMNS, compare_scores, no_reference_html

__all__ = ["DRIFT_COLUMNS", "compare_scores", "no_reference_html"]
