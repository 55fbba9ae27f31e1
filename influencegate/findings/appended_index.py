"""The streaming index's candidate pairs of an appended version (findings.appended, issue 15 item 4): the index
the previous version kept (findings.kept_index) reopened with only the new images added, or every image indexed
again, and the pairs that touch a new sample checked.

Pure core: numpy, torch.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from influencegate.findings import kept_index
from influencegate.findings.code_candidates import available_index
from influencegate.findings.duplicate_index import CODE_DIM, ViewIndex
from influencegate.findings.duplicate_links import INDEX_BATCH
from influencegate.findings.view_search import aligned_scores, nearest_of, prune_floor


def index_pairs(images: Any, views: Any, new: np.ndarray, prior: np.ndarray, kept: tuple[np.ndarray, str] | None,
                keep_in: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, s, score, order) of the streaming index's candidate pairs that touch a new sample (i < j): their
    view similarity (ViewIndex.similarity, exact from min(prune_floor, ViewMatch.nearest): wherever it can change
    a link) and the aligned check's score of those reaching ViewMatch.propose and of each image's nearest among
    them below it that reaches its `prior` best (M: its best similarity among the old samples;
    view_search.nearest_of), on the index's thumbnails. order: int64, each index row's row (`_opened_index`).
    new: bool M, the samples the previous version did not have; kept: (the row of each row of the index the
    previous version kept, the directory it is kept in), None: none; keep_in: where this version keeps its index
    (a local folder; else none kept)."""
    index, order = _opened_index(images, views, new, kept, keep_in)
    try:
        new_rows = new[order]
        ci, cj = index.candidates(index=available_index())
        touch = new_rows[ci] | new_rows[cj]
        ci, cj = ci[touch], cj[touch]
        sims = index.similarity(ci, cj, floor=min(prune_floor(views), views.nearest))
        near = nearest_of(ci, cj, sims, views, prior[order])
        score = aligned_scores(ci, cj, sims, index.thumbnails, views, near)
    except BaseException:
        index.close()  # a half-made index is never kept (kept_index.writable_path removed its settings file)
        raise
    if kept_index.local_path(keep_in):
        kept_index.keep(index, str(keep_in))
    else:
        index.close()
    i, j = order[ci], order[cj]
    return np.minimum(i, j), np.maximum(i, j), sims, score, order


def _opened_index(images: Any, views: Any, new: np.ndarray, kept: tuple[np.ndarray, str] | None,
                  keep_in: str | None) -> tuple[ViewIndex, np.ndarray]:
    """(index of every examined image, order: int64, this version's row of each index row): the index the
    previous version kept (`kept`: its rows' rows, its directory) with the new images appended, else every
    image indexed in this version's order; written in keep_in when it is a local folder (findings.kept_index),
    else at a temporary path."""
    index, rows = None, np.arange(len(new))
    if kept is not None and np.array_equal(np.sort(kept[0]), np.flatnonzero(~new)):
        index = kept_index.reopen(kept[1], keep_in, views, CODE_DIM, 0, len(kept[0]))
    if index is not None:
        rows = np.flatnonzero(new)
        order = np.concatenate([np.asarray(kept[0], dtype=np.int64), rows])
    else:
        path = kept_index.writable_path(keep_in)
        index, order = ViewIndex(views, path=path, search_bounds=path is not None), rows
    try:
        for start in range(0, len(rows), INDEX_BATCH):
            index.add(images[rows[start:start + INDEX_BATCH]])
    except BaseException:
        index.close()
        raise
    return index, order
