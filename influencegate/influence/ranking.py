"""Spearman rank correlation: of two score vectors, or of many pairs of columns in one vectorised step."""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of a[:, j] with b[:, j] for every trailing index j: a, b N x ... (same shape) -> ...
    (a 0-d array for two vectors). Ties take their average rank; NaN where a column holds a NaN or is constant."""
    ra, rb = rankdata(a, axis=0), rankdata(b, axis=0)
    ra, rb = ra - ra.mean(axis=0), rb - rb.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ra * rb).sum(axis=0) / np.sqrt((ra * ra).sum(axis=0) * (rb * rb).sum(axis=0))
