"""Findings on a scores table (docs/design.md section 5), one registered module each (findings.registry):
outliers, near-duplicates, the fairness audit and unusable images.

Each finding module holds a `Finding` (the algorithm: `find(table, embeddings, ...)` -> per-sample columns,
`summary()` -> metrics) and a registered `FindingPlugin` that declares its config, columns, metrics, text,
figures, tables and gate expectations. `find_all` runs the enabled ones; `artifacts` gives their figures and
tables by artifact path. Pure core: never imports zenml, mlflow, great expectations or evidently.
"""
from influencegate.findings.base import Finding, align_embeddings, check_table
from influencegate.findings.registry import (REGISTRY, Artifact, FindingInputs, FindingPlugin, FindingsConfig, Metric,
                                             Outcome, metric_catalog, register, suite_with_findings, unregister)
# Registration order is the order the findings run in: duplicates first, so that the outliers reuse the image
# statistics its index's streaming pass computes (FindingInputs.shared) instead of reading the pixels again.
from influencegate.findings.duplicates import IMAGE_MAX_SAMPLES, NEAR_DUPLICATE_THRESHOLD, Duplicates
from influencegate.findings.outliers import OUTLIER_K, OUTLIER_Z, Outliers
from influencegate.findings.duplicate_links import content_hashes
from influencegate.findings.fairness import Fairness, adjust_pvalues, share_test
from influencegate.findings.unusable import Unusable
from influencegate.findings.image_similarity import ImageMatch, image_pairs
from influencegate.findings.similarity import cosine_pairs, knn_cosine
from influencegate.findings.run import FindingsResult, artifacts, find_all

__all__ = ["Artifact", "Duplicates", "Fairness", "Finding", "FindingInputs", "FindingPlugin", "FindingsConfig",
           "FindingsResult", "IMAGE_MAX_SAMPLES", "ImageMatch", "Metric", "NEAR_DUPLICATE_THRESHOLD", "OUTLIER_K",
           "OUTLIER_Z", "Outcome", "Outliers", "REGISTRY", "Unusable", "adjust_pvalues", "align_embeddings",
           "artifacts", "check_table", "content_hashes", "cosine_pairs", "find_all", "image_pairs", "knn_cosine",
           "metric_catalog", "register", "share_test", "suite_with_findings", "unregister"]
