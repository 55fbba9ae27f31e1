"""Audit a dataset version that grew by appending, reusing the last version's fit and scores.

Dataset versions mostly grow: a new version keeps most samples of the last approved one. Influence is per
sample and the curvature is a dataset average fitted from sums (``curvature.LayerCurvature``), so with the
same encoder and config the new version needs only:

1. the new samples' curvature sums added to the previous fit (``InfluenceScorer.extend_fit``): exactly the
   fit of the union, with the previous fit's projections and draws;
2. the new samples scored under that refreshed curvature;
3. a check that the refresh did not move the old samples' ranking: `check_samples` old samples (spread
   over the previous table) are re-scored and their Spearman with their previous scores must reach
   `tolerance`; then every old score is kept, else every old sample is scored again.

Removed samples cannot be taken out of the sums, so a version that drops samples of the previous one is
refused with a ValueError (audit it in full). The returned table has the dataset's rows in its order, as
``InfluenceScorer.score`` would give.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from influencegate.influence.scorer import InfluenceScorer
from influencegate.influence.table import scores_table

#: Default Spearman that the re-scored old samples must keep with their previous scores, and how many are
#: re-scored (a +10% version of 1,797 digits then costs 0.19 of a full fit + score in draws).
RECHECK_TOLERANCE = 0.99
RECHECK_SAMPLES = 200


@dataclass(frozen=True)
class IncrementalReport:
    """What an incremental audit reused and checked (counts of readable samples)."""

    previous: int
    new: int
    rescored_old: int
    recheck_samples: int
    recheck_spearman: float
    tolerance: float

    @property
    def kept_old_scores(self) -> bool:
        return self.rescored_old == self.recheck_samples


def score_appended(scorer: InfluenceScorer, dataset: Any, previous_scores: pd.DataFrame,
                   tolerance: float = RECHECK_TOLERANCE,
                   check_samples: int = RECHECK_SAMPLES) -> tuple[pd.DataFrame, IncrementalReport]:
    """(scores table of `dataset`, report) for a `scorer` that holds the previous version's fit (``restore_fit``
    of its ``fit_state``; same encoder and config) and that version's scores table (`sample_id`, `influence`).

    dataset: an ImageDataset (``sample_ids``, ``subset``, ``records``) holding every previously scored sample.
    """
    previous = previous_scores.dropna(subset=["influence"]).set_index("sample_id")["influence"]
    ids = list(dataset.sample_ids)
    present = set(ids)
    dropped = [sid for sid in previous.index if sid not in present]
    if dropped:
        raise ValueError(f"{len(dropped)} samples of the previous version are not readable in this one (e.g. "
                         f"{dropped[:3]}); an incremental audit only adds samples: audit this version in full")
    new_ids = [sid for sid in ids if sid not in previous.index]
    if new_ids:
        scorer.extend_fit(dataset.subset(new_ids))
    old_ids = [sid for sid in ids if sid in previous.index]
    step = max(1, len(old_ids) // max(1, check_samples))
    check_ids = old_ids[::step][:check_samples]
    _, rechecked = scorer.influence(dataset.subset(check_ids)) if check_ids else ([], np.array([]))
    rho = float(pd.Series(rechecked).corr(pd.Series(previous.loc[check_ids].to_numpy()), method="spearman")) \
        if len(check_ids) > 2 else 1.0
    influence = {sid: float(previous[sid]) for sid in old_ids} if rho >= tolerance else {}
    to_score = [sid for sid in ids if sid not in influence]
    if to_score:
        scored_ids, values = scorer.influence(dataset.subset(to_score))
        influence.update(zip(scored_ids, values.tolist()))
    table = scores_table(ids, np.array([influence[sid] for sid in ids]), getattr(dataset, "records", None))
    report = IncrementalReport(previous=len(old_ids), new=len(new_ids),
                               rescored_old=len(check_ids) + (len(old_ids) if rho < tolerance else 0),
                               recheck_samples=len(check_ids), recheck_spearman=rho, tolerance=tolerance)
    return table, report
