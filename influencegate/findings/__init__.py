"""Findings on a scores table: near-duplicates, outliers and a fairness audit (docs/design.md section 5).

Each finding is a `Finding`: `find(table, embeddings, ...)` -> per-sample columns (or, for the fairness
audit, a per-group table) and `summary()` -> metrics. Pure core: never imports zenml, mlflow, great
expectations or evidently.
"""
from influencegate.findings.base import Finding, align_embeddings, check_table
from influencegate.findings.duplicates import IMAGE_MAX_SAMPLES, NEAR_DUPLICATE_THRESHOLD, Duplicates, content_hashes
from influencegate.findings.fairness import Fairness, adjust_pvalues, share_test
from influencegate.findings.image_similarity import ImageMatch, image_pairs
from influencegate.findings.outliers import OUTLIER_K, OUTLIER_Z, Outliers
from influencegate.findings.similarity import cosine_pairs, knn_cosine

__all__ = ["Duplicates", "Fairness", "Finding", "IMAGE_MAX_SAMPLES", "ImageMatch", "NEAR_DUPLICATE_THRESHOLD",
           "OUTLIER_K", "OUTLIER_Z", "Outliers", "adjust_pvalues", "align_embeddings", "check_table", "content_hashes",
           "cosine_pairs", "image_pairs", "knn_cosine", "share_test"]
