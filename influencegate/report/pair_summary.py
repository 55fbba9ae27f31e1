"""A pair audit in a few lines and numbers: the worst pairs with the combined score and the CLIP score beside
it, one line per removal set with the held-out accuracy now and the accuracy the ECIF edit predicts, and the
same as flat metrics for the tracking run. Pure core."""
from __future__ import annotations

import pandas as pd

from influencegate.ecif.table import ranking_column

#: How many of the worst pairs are printed.
WORST_PAIRS = 5


def worst_pairs(scores: pd.DataFrame, n: int = WORST_PAIRS) -> pd.DataFrame:
    """The n scored pairs with the highest combined_score (misalignment_score without a reference), worst
    first."""
    return scores[scores["error"].isna()].sort_values(ranking_column(scores), ascending=False, kind="stable").head(n)


def worst_pair_lines(scores: pd.DataFrame, n: int = WORST_PAIRS) -> list[str]:
    """One line per worst pair: sample id, combined score and group score (robust z against the reference,
    unitless), CLIP score (cosine), the flag and the caption."""
    lines = []
    for r in worst_pairs(scores, n).itertuples():
        combined = "n/a (no reference)" if pd.isna(r.combined_score) else f"{r.combined_score:7.2f}"
        group = "" if pd.isna(r.group_score) else f"  group {r.group_score:6.2f}"
        lines.append(f"  {r.sample_id}: combined {combined}{group}  CLIP {r.clip_score:5.2f}  "
                     f"{'misaligned' if r.is_misaligned else 'kept':10s}  {str(r.caption)[:60]!r}")
    return lines


def removal_lines(effects: pd.DataFrame) -> list[str]:
    """One line per removal set of a removal-effects table (``ecif.effects.removal_effects``)."""
    return [f"  remove {r.removal_set} ({r.n_removed} pairs): held-out zero-shot accuracy {r.accuracy_now:.3f} now, "
            f"{r.predicted_accuracy:.3f} predicted after the edit ({r.predicted_change_points:+.1f} points, "
            f"{r.n_queries} queries)" for r in effects.itertuples()]


def effect_metrics(effects: pd.DataFrame | None) -> dict[str, float]:
    """Flat metrics of a removal-effects table: effects.accuracy_now, and per removal set
    effects.<set>.n_removed, .predicted_accuracy and .predicted_change_points ({} without effects)."""
    if effects is None or effects.empty:
        return {}
    metrics = {"effects.accuracy_now": float(effects["accuracy_now"].iloc[0])}
    for r in effects.itertuples():
        for column in ("n_removed", "predicted_accuracy", "predicted_change_points"):
            metrics[f"effects.{r.removal_set}.{column}"] = float(getattr(r, column))
    return metrics
