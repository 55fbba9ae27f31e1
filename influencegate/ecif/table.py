"""The pair scores table of docs/design.md section 2."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

PAIR_COLUMNS = [
    "sample_id", "path", "caption", "misalignment_score", "misalignment_rank", "is_misaligned", "combined_score",
    "clip_score", "reference_clip_score", "group_score", "positive_if", "negative_if", "error",
]


def ranking_column(table: pd.DataFrame) -> str:
    """The column that orders a pair scores table worst first: combined_score when it was computed (with a
    reference set), else misalignment_score."""
    return "combined_score" if table["combined_score"].notna().any() else "misalignment_score"


def pair_scores_table(
    sample_ids: Sequence[str],
    paths: Sequence[str | None],
    captions: Sequence[str],
    misalignment_score: np.ndarray,
    is_misaligned: np.ndarray,
    clip_score: np.ndarray,
    positive_if: np.ndarray,
    negative_if: np.ndarray,
    failed: pd.DataFrame | None = None,
    combined_score: np.ndarray | None = None,
    reference_clip_score: np.ndarray | None = None,
    group_score: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per pair, columns PAIR_COLUMNS in that order.

    The scored pairs come first (in the given order), then the rows of ``failed`` (columns sample_id, path,
    caption, error): those keep NaN scores and their error, they are never dropped. A scored pair whose
    misalignment_score is not finite gets error "non-finite score". misalignment_rank: 1 = most misaligned
    among the finite scores (Int64, NA elsewhere); is_misaligned is False on rows with an error.
    combined_score, reference_clip_score and group_score (``influencegate.ecif.combined`` / ``evidence``,
    known with a reference set) default to NaN.
    """
    n = len(sample_ids)
    nan = np.full(n, np.nan)
    combined_score = nan if combined_score is None else combined_score
    reference_clip_score = nan if reference_clip_score is None else reference_clip_score
    group_score = nan if group_score is None else group_score
    arrays = {"misalignment_score": misalignment_score, "is_misaligned": is_misaligned, "clip_score": clip_score,
              "positive_if": positive_if, "negative_if": negative_if, "combined_score": combined_score,
              "reference_clip_score": reference_clip_score, "group_score": group_score}
    wrong = {k: len(v) for k, v in arrays.items() if len(v) != n} | {
        k: len(v) for k, v in (("paths", paths), ("captions", captions)) if len(v) != n}
    if wrong:
        raise ValueError(f"{n} sample ids but lengths {wrong}")
    score = np.asarray(misalignment_score, dtype=np.float64)
    finite = np.isfinite(score)
    table = pd.DataFrame({
        "sample_id": [str(s) for s in sample_ids],
        "path": list(paths),
        "caption": list(captions),
        "misalignment_score": score,
        "misalignment_rank": pd.Series(score).where(finite).rank(ascending=False, method="first").astype("Int64"),
        "is_misaligned": np.asarray(is_misaligned, dtype=bool) & finite,
        "combined_score": np.asarray(combined_score, dtype=np.float64),
        "clip_score": np.asarray(clip_score, dtype=np.float64),
        "reference_clip_score": np.asarray(reference_clip_score, dtype=np.float64),
        "group_score": np.asarray(group_score, dtype=np.float64),
        "positive_if": np.asarray(positive_if, dtype=np.float64),
        "negative_if": np.asarray(negative_if, dtype=np.float64),
        "error": [None if ok else "non-finite score" for ok in finite],
    })
    if failed is not None and len(failed):
        m = len(failed)
        column = {c: failed[c].tolist() if c in failed.columns else [None] * m
                  for c in ("sample_id", "path", "caption", "error")}
        nan = np.full(m, np.nan)
        rest = pd.DataFrame({
            "sample_id": [str(s) for s in column["sample_id"]], "path": column["path"], "caption": column["caption"],
            "misalignment_score": nan, "misalignment_rank": pd.array([pd.NA] * m, dtype="Int64"),
            "is_misaligned": np.zeros(m, dtype=bool), "combined_score": nan, "clip_score": nan,
            "reference_clip_score": nan, "group_score": nan, "positive_if": nan, "negative_if": nan,
            "error": [e if isinstance(e, str) and e else "not scored" for e in column["error"]],
        })
        table = pd.concat([table, rest], ignore_index=True)
    table["error"] = table["error"].astype(object).where(table["error"].notna(), None)
    return table[PAIR_COLUMNS]
