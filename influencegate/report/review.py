"""The review table of an audit: only the flagged rows, worst first, each with the finding that flags it, the
reason in words, its sample id and path, a severity, the finding's score and a small thumbnail.

Pure core (pandas, PIL): `flagged_rows` selects and orders the rows, `review_table` adds the thumbnails.
One row per (sample, finding): a sample that is an outlier and highly influential appears twice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from influencegate.plotting.canvas import to_uint8

#: The most rows a review table holds (the worst ones) and the thumbnails' side in pixels.
REVIEW_LIMIT = 500
THUMBNAIL_SIZE = 64
#: The review table's columns; `image` (a PIL thumbnail) follows them in `review_table`.
COLUMNS = ("finding", "reason", "sample_id", "path", "severity", "score")


@dataclass(frozen=True)
class Flag:
    """One finding as the review reads it: the boolean column that flags a row, the scores that order the
    flagged rows (the first column holding a finite value; empty: a fact, severity 1), and the reason of one
    row in words."""

    finding: str
    column: str
    scores: tuple[str, ...]
    reason: Callable[[pd.Series], str]

    def score_column(self, table: pd.DataFrame) -> str | None:
        """The first of `scores` that `table` holds with a finite value; None for a fact or when none does."""
        return next((c for c in self.scores if c in table.columns
                     and np.isfinite(pd.to_numeric(table[c], errors="coerce")).any()), None)


def _number(value: object, digits: int = 3) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{float(value):.{digits}g}"


#: In the order that breaks severity ties: facts (unreadable, copies) before suspicions.
FLAGS = (
    Flag("error", "error", (), lambda r: str(r["error"])),
    Flag("duplicate", "is_duplicate", (),
         lambda r: f"near-duplicate of {r.get('duplicate_of')} (group {r.get('duplicate_group')})"),
    Flag("misaligned", "is_misaligned", ("combined_score", "misalignment_score"),
         lambda r: f"caption does not fit the image: combined score {_number(r.get('combined_score'))}, "
                   f"group score {_number(r.get('group_score'))}, "
                   f"CLIP score {_number(r.get('clip_score'))}, ECIF misalignment score "
                   f"{_number(r['misalignment_score'])}; caption {str(r.get('caption'))[:80]!r}"),
    Flag("outlier", "is_outlier", ("outlier_score",),
         lambda r: f"outlier score {_number(r['outlier_score'])} (robust z of log_influence and k-NN distance "
                   "combined)"),
    Flag("high_influence", "is_high_influence", ("log_influence",),
         lambda r: f"high influence: percentile {_number(r.get('influence_percentile'), 4)}, log_influence "
                   f"{_number(r['log_influence'])}"),
)


def _flagged(table: pd.DataFrame, flag: Flag) -> pd.Series:
    """Which rows `flag` marks: a non-null error, or a boolean column that is True (missing = not flagged)."""
    if flag.column not in table.columns:
        return pd.Series(False, index=table.index)
    values = table[flag.column]
    return values.notna() if flag.finding == "error" else values.eq(True).fillna(False).astype(bool)


def flagged_rows(table: pd.DataFrame, limit: int = REVIEW_LIMIT) -> pd.DataFrame:
    """The flagged rows of a scores table (errors, duplicates, misaligned pairs, outliers, high influence),
    at most `limit` of them, worst first, with COLUMNS.

    severity: in [0, 1], the percentile rank of the finding's score among all rows with a finite score
    (1 = the most extreme row of the dataset); errors and duplicates are facts, severity 1. Ties keep the FLAGS
    order, then the higher score, then sample_id. score: the finding's own score (NaN for facts)."""
    parts = []
    for order, flag in enumerate(FLAGS):
        mask = _flagged(table, flag)
        if not mask.any():
            continue
        rows, column = table[mask], flag.score_column(table)
        if column is None:
            score = pd.Series(np.nan, index=rows.index)
            severity = pd.Series(1.0, index=rows.index)
        else:
            values = pd.to_numeric(table[column], errors="coerce").where(lambda s: np.isfinite(s))
            score, severity = values[mask], values.rank(pct=True)[mask].fillna(0.0)
        parts.append(pd.DataFrame({
            "finding": flag.finding, "reason": [flag.reason(r) for _, r in rows.iterrows()],
            "sample_id": rows["sample_id"].astype(str), "path": rows.get("path", pd.Series(None, index=rows.index)),
            "severity": severity.astype(float), "score": score.astype(float), "_order": order}))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=float if c in ("severity", "score") else object) for c in COLUMNS})
    rows = pd.concat(parts, ignore_index=True)
    rows = rows.sort_values(["severity", "_order", "score", "sample_id"], ascending=[False, True, False, True],
                            na_position="last")
    return rows.head(max(0, int(limit)))[list(COLUMNS)].reset_index(drop=True)


def thumbnail(pixels: np.ndarray | None, size: int = THUMBNAIL_SIZE) -> Image.Image:
    """An RGB `size` x `size` thumbnail of C x H x W pixels in [0, 1] (nearest-neighbour, so small images stay
    sharp), or a grey tile saying "no image" when `pixels` is None (an unreadable sample)."""
    if pixels is None:
        tile = Image.new("RGB", (size, size), (220, 220, 220))
        ImageDraw.Draw(tile).text((4, size // 2 - 6), "no image", fill="black")
        return tile
    image = Image.fromarray(to_uint8(pixels))
    scale = size / max(image.size)
    shape = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(shape, Image.NEAREST if scale >= 1 else Image.BILINEAR)


def review_table(table: pd.DataFrame, images: Callable[[str], np.ndarray], limit: int = REVIEW_LIMIT,
                 size: int = THUMBNAIL_SIZE) -> pd.DataFrame:
    """`flagged_rows` plus an `image` column of thumbnails. images: sample_id -> C x H x W pixels in [0, 1]
    (e.g. `report.dataset_images(dataset)`); an id it raises KeyError for gets the "no image" tile."""
    rows = flagged_rows(table, limit)

    def lookup(sample_id: str) -> np.ndarray | None:
        try:
            return images(sample_id)
        except KeyError:
            return None

    return rows.assign(image=[thumbnail(lookup(s), size) for s in rows["sample_id"]])
