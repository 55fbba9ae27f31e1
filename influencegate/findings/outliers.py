"""Outliers: high influence combined with distance to the k nearest neighbours in embedding space."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from influencegate.findings.appended import Previous, knn_appended
from influencegate.findings.base import Finding, align_embeddings, check_table
from influencegate.findings.registry import (Artifact, FindingInputs, FindingPlugin, Metric, Outcome, between,
                                             flagged_ids, register)
from influencegate.findings.similarity import DEFAULT_BLOCK, check_index, knn_cosine
from influencegate.plotting.galleries import outlier_gallery
from influencegate.statistics import robust_z

#: Neighbours averaged for the distance score.
OUTLIER_K = 10
#: outlier_score above which a sample is an outlier: the same 3.5 robust-z cut as is_high_influence
#: (Iglewicz & Hoaglin), applied to the combined score.
OUTLIER_Z = 3.5
COMBINE_RULES = ("mean", "max")


class Outliers(Finding):
    """outlier_score = combine(robust_z(log_influence), robust_z(knn_distance)); is_outlier = score > z.

    knn_distance: mean cosine distance (1 - cosine of L2-normalised embeddings) to the k nearest other
    samples (blockwise, exact; or through a faiss `index`, "faiss-flat" exact, "faiss-hnsw" approximate, for
    large sets). robust_z: (x - median) / (1.4826 MAD), influencegate.statistics.robust_z, over the
    rows that have both values.
    combine: "mean" (default) = the average of the two z-scores: a sample must be unusual on both counts (or
      extreme on one) to score high; "max" = the larger of the two: either signal alone suffices.
    Rows with an error or without an embedding get NaN and is_outlier False.
    """

    name = "outliers"
    columns = ("is_outlier", "outlier_score")

    def __init__(self, k: int = OUTLIER_K, z: float = OUTLIER_Z, combine: str = "mean",
                 block_size: int = DEFAULT_BLOCK, device: str = "cpu", index: str = "exact") -> None:
        if combine not in COMBINE_RULES:
            raise ValueError(f"combine must be one of {COMBINE_RULES}, got {combine!r}")
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k, self.z, self.combine = int(k), float(z), combine
        self.block_size, self.device, self.index = block_size, device, check_index(index)
        self._result: pd.DataFrame | None = None
        self.components: pd.DataFrame | None = None
        self.state: dict[str, Any] = {}

    def find(self, table: pd.DataFrame, embeddings: np.ndarray | None = None, *,
             sample_ids: Sequence[str] | None = None, previous: Previous | None = None, **_: Any) -> pd.DataFrame:
        """previous: the previous version's state (findings.appended): only the new samples' neighbours are
        searched and the old samples' merged with them (the same k-NN); `state` then holds {"knn": M x k}."""
        check_table(table, ["sample_id", "log_influence"], "outliers")
        positions, emb = align_embeddings(table, embeddings, sample_ids, "outliers")
        if len(positions) < 2:
            raise ValueError("outliers: need at least 2 samples with embeddings")
        if previous is None:
            sims, _ = knn_cosine(emb, self.k, self.block_size, self.device, self.index)
        else:
            sims = knn_appended(emb, self.k, previous, self.block_size, self.device)
            self.state = {"knn": sims}
        knn = pd.Series(np.nan, index=table.index)
        knn.iloc[positions] = (1.0 - sims.astype(np.float64)).mean(axis=1)
        log_inf = pd.to_numeric(table["log_influence"], errors="coerce").astype(float)
        both = knn.notna() & log_inf.notna() & np.isfinite(log_inf)
        z_inf = pd.Series(np.nan, index=table.index)
        z_knn = pd.Series(np.nan, index=table.index)
        z_inf[both] = robust_z(log_inf[both])
        z_knn[both] = robust_z(knn[both])
        a, b = z_inf.to_numpy(), z_knn.to_numpy()
        score = (a + b) / 2.0 if self.combine == "mean" else np.maximum(a, b)  # NaN where either is NaN
        result = pd.DataFrame({"is_outlier": np.nan_to_num(score, nan=-np.inf) > self.z, "outlier_score": score},
                              index=table.index)
        self.components = pd.DataFrame({"knn_distance": knn, "z_log_influence": z_inf, "z_knn_distance": z_knn},
                                       index=table.index)
        self._result = result
        return result

    def summary(self) -> dict[str, Any]:
        result = self._require_found("_result")
        scored = result["outlier_score"].notna()
        return {"k": self.k, "z": self.z, "combine": self.combine, "examined": int(scored.sum()),
                "outliers": int(result["is_outlier"].sum()),
                "outlier_fraction": float(result["is_outlier"].sum() / max(int(scored.sum()), 1)),
                "max_outlier_score": float(result["outlier_score"].max()) if scored.any() else None}


@register
class OutliersFinding(FindingPlugin):
    """The registered outliers finding; its options are the keyword arguments of `Outliers`."""

    name = "outliers"
    Config = Outliers
    columns = Outliers.columns
    metrics = (Metric("outlier_fraction", "fraction of examined samples", "samples flagged is_outlier / samples "
                      "with an outlier_score"),
               Metric("n_outliers", "count of samples", "samples flagged is_outlier"))
    figures = (Artifact("outlier_gallery", "figures/outliers.png"),)
    expectations = {"summary": [between(
        "outlier_fraction", "outlier_fraction = samples whose combined robust z-score (log_influence and k-NN "
        "distance) exceeds 3.5, which about 0.05% of a Gaussian sample does. Above 2% the version holds a cluster "
        "of foreign or corrupted images worth review (the clean digits measure below 0.5%).", 0, 0.02)]}

    def run(self, inputs: FindingInputs, config: Outliers) -> Outcome:
        columns = config.find(inputs.table, inputs.embeddings, sample_ids=inputs.sample_ids, previous=inputs.previous)
        found = config.summary()
        text = (f"{found['outliers']} of {found['examined']} samples are outliers (combined robust z-score of "
                f"log_influence and {found['k']}-NN distance above {found['z']:g})"
                + (f": {flagged_ids(inputs.table, columns['is_outlier'])}." if found["outliers"] else "."))
        return Outcome(columns, {"outlier_fraction": float(found["outlier_fraction"]),
                                 "n_outliers": float(found["outliers"])}, text, config.state)

    def draw(self, table: pd.DataFrame, images_by_id: Any, groups: Sequence[str]) -> dict[str, Any]:
        return {"outlier_gallery": outlier_gallery(table, images_by_id)}
