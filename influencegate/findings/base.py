"""The shared interface of the findings (an "issue manager" family): input checks and row alignment.

A finding takes the scores table (docs/design.md section 2) and, where it needs them, the embeddings of the
readable samples, and returns a DataFrame with one row per row of the table (same index, same order) holding
its per-sample columns. `summary()` then gives its metrics as a flat JSON-ready dict.

Alignment rule: `embeddings[i]` belongs to `sample_ids[i]`; when `sample_ids` is None the embeddings must
have one row per error-free table row (rows whose `error` is null), in table order — which is what
`InfluenceScorer.score(ds)` and `InfluenceScorer.embeddings(ds)` produce for the same dataset.
Rows with an `error` (or without an embedding) get the neutral values (no group, not an outlier, NaN score):
they are never dropped, and the gate counts them through `error`.

Pure core: numpy, pandas, scipy, torch only.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np
import pandas as pd


class Finding(ABC):
    """One kind of finding. Subclasses set `name` and `columns` and implement `find` and `summary`."""

    name: str = "finding"
    #: the per-sample columns `find` returns (a finding without per-sample columns leaves this empty)
    columns: tuple[str, ...] = ()

    @abstractmethod
    def find(self, table: pd.DataFrame, embeddings: np.ndarray | None = None, **kwargs: Any) -> pd.DataFrame:
        """Per-sample columns for every row of `table` (same index and order)."""

    @abstractmethod
    def summary(self) -> dict[str, Any]:
        """Metrics of the last `find` call (flat dict of JSON-ready values)."""

    def _require_found(self, attr: str) -> Any:
        value = getattr(self, attr, None)
        if value is None:
            raise RuntimeError(f"call {type(self).__name__}.find(...) before summary()")
        return value


def check_table(table: pd.DataFrame, required: Sequence[str], who: str) -> None:
    """ValueError naming the missing columns, or saying the table is empty."""
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"{who}: expected a pandas DataFrame scores table, got {type(table).__name__}")
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(f"{who}: the scores table lacks column(s) {missing}; it has {list(table.columns)}")
    if table.empty:
        raise ValueError(f"{who}: the scores table is empty (no sample to examine)")


def scorable_mask(table: pd.DataFrame) -> np.ndarray:
    """True for rows without an `error` (all rows when there is no `error` column)."""
    if "error" not in table.columns:
        return np.ones(len(table), dtype=bool)
    return table["error"].isna().to_numpy()


def align_embeddings(table: pd.DataFrame, embeddings: np.ndarray | None, sample_ids: Sequence[str] | None,
                     who: str) -> tuple[np.ndarray, np.ndarray]:
    """(positions of the table rows that have an embedding, their embeddings float32 M x D, same order)."""
    if embeddings is None:
        raise ValueError(f"{who}: embeddings are required (N x D array, e.g. InfluenceScorer.embeddings(ds))")
    emb = np.asarray(embeddings)
    if emb.ndim != 2:
        raise ValueError(f"{who}: embeddings must be a 2-D array N x D, got shape {emb.shape}")
    if not np.issubdtype(emb.dtype, np.number):
        raise ValueError(f"{who}: embeddings must be numeric, got dtype {emb.dtype}")
    if sample_ids is None:
        positions = np.flatnonzero(scorable_mask(table))
        if len(positions) != len(emb):
            raise ValueError(f"{who}: {len(emb)} embeddings for {len(positions)} error-free table rows; pass "
                             "sample_ids to say which row each embedding belongs to")
        return positions, emb.astype(np.float32, copy=False)
    ids = [str(s) for s in sample_ids]
    if len(ids) != len(emb):
        raise ValueError(f"{who}: {len(ids)} sample_ids for {len(emb)} embeddings")
    index = pd.Index(table["sample_id"].astype(str))
    if not index.is_unique:
        raise ValueError(f"{who}: sample_id values in the scores table must be unique")
    positions = index.get_indexer(ids)
    if (positions < 0).any():
        unknown = [s for s, p in zip(ids, positions) if p < 0][:5]
        raise ValueError(f"{who}: sample_ids not in the scores table: {unknown}")
    return positions, emb.astype(np.float32, copy=False)
