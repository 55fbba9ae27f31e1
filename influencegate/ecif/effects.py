"""The "remove these and the predicted effect" table: removal sets of the pair scores table, and the
held-out zero-shot accuracy that the ECIF parameter edit predicts without each of them (issue 16, item 5).

Held-out queries: the clean reference pairs, each with a class (``EffectsConfig.label_column`` of the
reference records, e.g. the digit; a reference without that column uses each pair's caption as its class).
A class's text is the mean frozen text feature of the reference captions of that class (K x text_dim), and
the zero-shot prediction of a query image is the class whose text embedding has the highest cosine with
its image embedding (``DualEncoder.zero_shot``). The reference pairs are never in the fitted batches; they
do define the clean loss that ECIF and the combined score measure, so the accuracy is held out for the
model, not for the choice of the removal sets.
The edit is ``EcifScorer.removal_edit`` (theta + H^-1 sum_n grad(Pos_n + Neg_n), the function
benchmarks/ecif_removal.py compares with retraining): no retraining.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
import torch

from influencegate.ecif.pairs import PairSet
from influencegate.ecif.scorer import EcifScorer
from influencegate.ecif.table import ranking_column

#: The removal set of the pairs the calibrated rule flags; the others are named by ``share_name``.
FLAGGED = "is_misaligned"
EFFECT_COLUMNS = ["removal_set", "n_removed", "n_queries", "accuracy_now", "predicted_accuracy",
                  "predicted_change_points"]


@dataclass(frozen=True)
class EffectsConfig:
    """What the pair audit shows beside the scores.

    removal_shares: removal sets of the top shares (fractions in (0, 1)) of the scored pairs by combined
        score, besides the flagged pairs. queries: how many of the worst mispredicted held-out queries are
        traced back; top_k: training pairs traced to each. label_column: the reference records' column that
        names each held-out query's class (missing: the caption is the class).
    """

    removal_shares: tuple[float, ...] = (0.01, 0.02, 0.05)
    queries: int = 8
    top_k: int = 5
    label_column: str = "label"

    def __post_init__(self) -> None:
        object.__setattr__(self, "removal_shares", tuple(float(s) for s in self.removal_shares))
        if not all(0.0 < s < 1.0 for s in self.removal_shares):
            raise ValueError(f"removal_shares must each be in (0, 1), got {list(self.removal_shares)}")
        if self.queries < 0 or self.top_k < 1:
            raise ValueError(f"queries must be >= 0 and top_k >= 1, got {self.queries} and {self.top_k}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EffectsConfig:
        """Build from a config section; ValueError naming unknown keys."""
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown effects settings {unknown}; known: {[f.name for f in fields(cls)]}")
        return cls(**values)


@dataclass(frozen=True)
class HeldOut:
    """Labelled held-out queries: sample_ids (Q), inputs (Q x ..., what the fitted dual encoder takes,
    float64), labels (Q,) int64 indices into class_names (K), class_texts (K x text_dim float64)."""

    sample_ids: list[str]
    inputs: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    class_texts: torch.Tensor


def held_out_queries(scorer: EcifScorer, reference: PairSet, classes: Sequence[Hashable]) -> HeldOut:
    """The reference pairs as held-out queries of a fitted scorer; classes: one per reference pair (Q), e.g.
    its digit or its caption. ValueError for a length mismatch or fewer than 2 classes."""
    if len(classes) != len(reference):
        raise ValueError(f"{len(classes)} classes for {len(reference)} held-out pairs")
    names = sorted({str(c) for c in classes})
    if len(names) < 2:
        raise ValueError(f"held-out queries need at least 2 classes, got {names}")
    labels = torch.tensor([names.index(str(c)) for c in classes], dtype=torch.int64)
    texts = scorer.text_inputs(reference.captions)
    class_texts = torch.stack([texts[labels == k].mean(0) for k in range(len(names))])
    return HeldOut(list(reference.sample_ids), scorer.image_inputs(reference.images), labels, names, class_texts)


def predictions(scorer: EcifScorer, theta: torch.Tensor, held_out: HeldOut) -> torch.Tensor:
    """Zero-shot class index of every held-out query (Q,) int64 under parameters theta (P,)."""
    return scorer.dual_encoder_at(theta, torch.float64).zero_shot(held_out.inputs, held_out.class_texts)


def accuracy(scorer: EcifScorer, theta: torch.Tensor, held_out: HeldOut) -> float:
    """Share of held-out queries whose zero-shot class is right, in [0, 1], under parameters theta (P,)."""
    return float((predictions(scorer, theta, held_out) == held_out.labels).double().mean())


def share_name(share: float) -> str:
    """The removal set of the top `share` by combined score: 0.01 -> "top_1pct"."""
    return f"top_{100 * share:g}pct"


def removal_sets(table: pd.DataFrame, shares: Sequence[float]) -> dict[str, list[str]]:
    """{set name: sample ids, most misaligned first} of a pair scores table: FLAGGED (the is_misaligned
    pairs), then per share the top max(1, round(share x n)) of the n scored pairs by combined_score
    (misalignment_score when no combined score was computed: no reference). Rows with an error are never
    in a set; ties keep the table's order."""
    column = ranking_column(table)
    scored = table[table["error"].isna() & np.isfinite(table[column].astype(float))]
    ranked = scored.sort_values(column, ascending=False, kind="stable")
    sets = {FLAGGED: ranked.loc[ranked["is_misaligned"].astype(bool), "sample_id"].tolist()}
    for share in shares:
        sets[share_name(share)] = ranked["sample_id"].head(max(1, round(share * len(ranked)))).tolist()
    return sets


def removal_effects(scorer: EcifScorer, held_out: HeldOut, sets: Mapping[str, Sequence[str]]
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(effects, members). effects: one row per set, EFFECT_COLUMNS: n_removed pairs, n_queries held out,
    accuracy_now and predicted_accuracy (zero-shot, in [0, 1]) at theta and at the ECIF edit without the
    set, predicted_change_points = 100 x their difference. members: removal_set, rank (1 = most
    misaligned), sample_id: the ids of every set."""
    now = accuracy(scorer, scorer.theta, held_out)
    rows = []
    for name, ids in sets.items():
        after = accuracy(scorer, scorer.removal_edit(list(ids)), held_out) if ids else now
        rows.append({"removal_set": name, "n_removed": len(ids), "n_queries": len(held_out.sample_ids),
                     "accuracy_now": now, "predicted_accuracy": after, "predicted_change_points": 100 * (after - now)})
    members = pd.DataFrame([{"removal_set": name, "rank": i + 1, "sample_id": s}
                            for name, ids in sets.items() for i, s in enumerate(ids)],
                           columns=["removal_set", "rank", "sample_id"])
    return pd.DataFrame(rows, columns=EFFECT_COLUMNS), members
