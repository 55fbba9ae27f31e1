"""Exact and near-duplicates: content hash of the image tensor, cosine similarity of embeddings, connected
components, one canonical member kept per group (DESIGN.md sections 2 and 5)."""
from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

from influencegate.findings.base import Finding, align_embeddings, check_table
from influencegate.findings.similarity import DEFAULT_BLOCK, cosine_pairs

#: Default cosine threshold (of the centred, L2-normalised embeddings) for a near-duplicate pair. Chosen by
#: measurement (benchmarks/findings_quality.py: digits + 60 planted near-copies + 20 exact copies, SmallCNN
#: SimCLR 15 epochs, four runs with different encoder initialisations, whose sweeps differ): the
#: highest-recall threshold whose precision stayed >= 0.85 in every run (0.87-0.97; 0.993-0.994 fell to 0.73-0.76 in
#: two runs; 0.996+ loses recall). Embedding-dependent: re-measure for another encoder.
NEAR_DUPLICATE_THRESHOLD = 0.995
KEEP_RULES = ("first", "most_influential", "least_influential")


def content_hashes(images: torch.Tensor | np.ndarray) -> list[str]:
    """sha256 (hex) of each sample's tensor bytes (float32, C-contiguous): equal only for identical pixels."""
    arr = np.ascontiguousarray(images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images,
                               dtype=np.float32)
    return [hashlib.sha256(arr[i].tobytes()).hexdigest() for i in range(arr.shape[0])]


def exact_pairs(hashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) edges linking each sample to the first sample with the same hash."""
    first: dict[str, int] = {}
    ii, jj = [], []
    for pos, h in enumerate(hashes):
        if h in first:
            ii.append(first[h])
            jj.append(pos)
        else:
            first[h] = pos
    return np.asarray(ii, dtype=np.int64), np.asarray(jj, dtype=np.int64)


class Duplicates(Finding):
    """Near-duplicate groups. Columns: duplicate_group (int, -1 = none), is_duplicate, duplicate_of.

    threshold: cosine similarity at or above which two samples are linked.
    center: subtract the mean embedding (of the examined rows) before L2-normalising (default True). SSL
      embeddings share a large common direction: on the digits benchmark the raw cosine of a sample to its
      nearest neighbour has median 0.999, so any threshold chains almost everything into one group;
      centred, the median is 0.95 and planted copies separate.
    Groups are the connected components of the links (so a chain a~b~c is one group even when a and c are
    below the threshold). exact: also link samples whose image tensors hash identically (needs `images`).
    keep: the canonical member of a group, the one kept (`duplicate_of` names it for every member):
      "first" (default) = the first in table order: stable across scorer seeds and devices, and in a dataset
        with appended copies it is the original; "most_influential" = the lowest influence_rank (ties: first);
        "least_influential" = the highest influence_rank.
    Group ids are 0, 1, ... in the table order of their canonical members.
    """

    name = "duplicates"
    columns = ("duplicate_group", "is_duplicate", "duplicate_of")

    def __init__(self, threshold: float = NEAR_DUPLICATE_THRESHOLD, exact: bool = True, keep: str = "first",
                 center: bool = True, block_size: int = DEFAULT_BLOCK, device: str = "cpu") -> None:
        if not -1.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
        if keep not in KEEP_RULES:
            raise ValueError(f"keep must be one of {KEEP_RULES}, got {keep!r}")
        self.threshold, self.exact, self.keep = float(threshold), exact, keep
        self.center, self.block_size, self.device = center, block_size, device
        self._result: pd.DataFrame | None = None
        self._table: pd.DataFrame | None = None
        self._stats: dict[str, Any] = {}

    def find(self, table: pd.DataFrame, embeddings: np.ndarray | None = None, *,
             images: torch.Tensor | np.ndarray | None = None, sample_ids: Sequence[str] | None = None,
             **_: Any) -> pd.DataFrame:
        """embeddings: M x D for the readable rows (see base.align_embeddings); images: M x C x H x W in the
        same order as the embeddings (for the exact check). At least one of them is needed."""
        needed = ["sample_id"] + (["influence_rank"] if self.keep != "first" else [])
        check_table(table, needed, "duplicates")
        if embeddings is None and images is None:
            raise ValueError("duplicates: pass embeddings (near-duplicates) and/or images (exact duplicates)")
        if embeddings is not None:
            positions, emb = align_embeddings(table, embeddings, sample_ids, "duplicates")
        else:
            positions, emb = align_embeddings(table, np.zeros((len(images), 1), np.float32), sample_ids, "duplicates")
        m = len(positions)
        edges_i, edges_j = [], []
        n_near_pairs = n_exact_pairs = 0
        if embeddings is not None and m > 1:
            if self.center:
                emb = emb - emb.mean(axis=0, keepdims=True)
            i, j, _ = cosine_pairs(emb, self.threshold, self.block_size, self.device)
            edges_i.append(i)
            edges_j.append(j)
            n_near_pairs = len(i)
        exact_members = np.zeros(m, dtype=bool)
        if self.exact and images is not None:
            if len(images) != m:
                raise ValueError(f"duplicates: {len(images)} images for {m} embeddings/rows")
            i, j = exact_pairs(content_hashes(images))
            edges_i.append(i)
            edges_j.append(j)
            n_exact_pairs = len(i)
            exact_members[i] = exact_members[j] = True
        ii = np.concatenate(edges_i) if edges_i else np.zeros(0, np.int64)
        jj = np.concatenate(edges_j) if edges_j else np.zeros(0, np.int64)
        graph = sp.coo_matrix((np.ones(len(ii), dtype=np.int8), (ii, jj)), shape=(m, m)).tocsr()
        _, labels = connected_components(graph, directed=False)

        # rows (table positions) of each multi-member component, canonical member chosen by the keep rule
        group = np.full(len(table), -1, dtype=np.int64)
        is_dup = np.zeros(len(table), dtype=bool)
        dup_of = np.full(len(table), None, dtype=object)
        sizes = np.bincount(labels, minlength=m) if m else np.zeros(0, int)
        comp_rows: dict[int, list[int]] = {}
        for local, comp in enumerate(labels):
            if sizes[comp] > 1:
                comp_rows.setdefault(int(comp), []).append(int(positions[local]))
        ranks = (pd.to_numeric(table["influence_rank"], errors="coerce").to_numpy(dtype=float)
                 if "influence_rank" in table.columns else None)
        canon = {c: self._canonical(sorted(rows), ranks) for c, rows in comp_rows.items()}
        ids = table["sample_id"].astype(str).to_numpy()
        for gid, comp in enumerate(sorted(canon, key=lambda c: canon[c])):
            keep_row = canon[comp]
            for row in comp_rows[comp]:
                group[row] = gid
                dup_of[row] = ids[keep_row]
                is_dup[row] = row != keep_row
        result = pd.DataFrame({"duplicate_group": group, "is_duplicate": is_dup, "duplicate_of": dup_of},
                              index=table.index)
        self._result, self._table = result, table
        self._stats = {"near_pairs": int(n_near_pairs), "exact_pairs": int(n_exact_pairs),
                       "exact_members": int(exact_members.sum()), "examined": int(m)}
        return result

    def _canonical(self, rows: list[int], ranks: np.ndarray | None) -> int:
        if self.keep == "first" or ranks is None:
            return rows[0]
        r = np.array([ranks[x] for x in rows])
        r = np.where(np.isnan(r), np.inf if self.keep == "most_influential" else -np.inf, r)
        pick = np.argmin(r) if self.keep == "most_influential" else np.argmax(r)
        return rows[int(pick)]

    def groups(self) -> pd.DataFrame:
        """One row per member of a group: duplicate_group, sample_id, is_duplicate, duplicate_of and, where the
        table has them, influence, log_influence, influence_rank, influence_percentile (influence shown beside
        each group), sorted by group then influence_rank."""
        result = self._require_found("_result")
        table = self._table
        extra = [c for c in ("influence", "log_influence", "influence_rank", "influence_percentile")
                 if c in table.columns]
        members = pd.concat([table[["sample_id", *extra]], result], axis=1)
        members = members[members["duplicate_group"] >= 0]
        order = ["duplicate_group"] + (["influence_rank"] if "influence_rank" in extra else [])
        return members.sort_values(order, kind="stable").reset_index(drop=True)

    def summary(self) -> dict[str, Any]:
        """threshold, counts (groups, members, duplicates = removable copies), duplicate_fraction (copies /
        examined rows), exact pairs, and the median influence percentile of the copies and of all members."""
        result = self._require_found("_result")
        table = self._table
        grouped = result["duplicate_group"] >= 0
        out: dict[str, Any] = {
            "threshold": self.threshold, "center": self.center, "keep": self.keep, **self._stats,
            "groups": int(result.loc[grouped, "duplicate_group"].nunique()),
            "group_members": int(grouped.sum()),
            "duplicates": int(result["is_duplicate"].sum()),
            "duplicate_fraction": float(result["is_duplicate"].sum() / max(self._stats.get("examined", 0), 1)),
        }
        if "influence_percentile" in table.columns:
            pct = pd.to_numeric(table["influence_percentile"], errors="coerce")
            for key, mask in (("duplicates", result["is_duplicate"]), ("group_members", grouped)):
                values = pct[mask.to_numpy()].dropna()
                out[f"median_influence_percentile_{key}"] = float(values.median()) if len(values) else None
        return out
