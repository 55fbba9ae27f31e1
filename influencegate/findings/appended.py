"""Findings of an appended dataset version (issue 15): only what the new samples can change is recomputed.

A version that appends samples to the previous one keeps that version's findings state (`Previous`), and:
  * outliers: the k nearest neighbours of each new sample are searched among all samples; an old sample keeps
    its previous k nearest unless a new sample enters them (its top-k is merged with its similarities to the
    new samples): the same neighbours as a full search. The robust z-scores use the whole version.
  * duplicates: exact copies by content hash, the new samples' hashes against all; near copies only for the
    pairs with at least one new member (all-pairs matchers: new rows x all columns; the streaming index: its
    candidate pairs restricted to those touching a new sample); each image's top-k similarities (the relative
    rule's k-th best) are the previous ones merged with the new pairs. The previous version's links among old
    samples are carried over, so a new sample may join an old group.

A full audit that keeps a state is the same computation with every sample new (`Previous.empty`).

Tolerance against a full audit of the same version, same scores table and embeddings: the outliers' k-NN, and
so outlier_score and is_outlier, are equal to float rounding; every link with a new member is the full search's
(same k-th bests; the index path: the candidates of that index); what can differ is a link between two old
samples, which is carried over as it was, while a full audit re-tests it against k-th bests that the new
samples may have raised (the relative rule only) or, with the embedding cosine, against a re-centred mean.

Pure core: numpy, torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from influencegate.findings.appended_index import index_pairs
from influencegate.findings.duplicate_links import INDEX_BATCH, content_hashes
from influencegate.findings.image_similarity import _Tiles, thumbnails
from influencegate.findings.similarity import check_block, no_pairs, normalized
from influencegate.findings.view_search import (aligned_scores, align_thumbnails, all_views, block_similarity, link,
                                                merge_nearest, nearest_pairs, tile_side)
from influencegate.heap import release_heap

#: Value of an empty top-k slot (below every similarity).
EMPTY = -2.0
Similarity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


#: the files an audited version keeps its findings state and its images' statistics in, in its resume
#: directory (workflows.version_state; the statistics are what a later version's outliers read as reference)
STATE_FILE = "findings.npz"
STATISTICS_FILE = "statistics.npz"


@dataclass
class Previous:
    """The previous version's findings state, in this version's M examined rows (their embedding order).

    new: bool M, the samples the previous version did not have. knn: M x k float32 outliers' neighbour
    similarities (rows of old samples; None: none kept). near_top: M x k' float32 each image's top similarities
    of the near-duplicate matcher (None: none kept). hashes: M content hashes (None for new samples; None:
    none kept). links: (i, j) int64 positions of the previous version's duplicate links among old samples.
    statistics: M x 8 float64, the outliers' image statistics of the old rows (image_stats.STATISTICS; None:
    none kept). index_rows: int64, the row of each row of the near-duplicate index kept in the directory `index_from`
    (findings.kept_index; None: none kept). keep_in: the directory this version keeps its index in (None: none)."""

    new: np.ndarray
    knn: np.ndarray | None = None
    near_top: np.ndarray | None = None
    hashes: list[str | None] | None = None
    links: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    statistics: np.ndarray | None = None
    index_rows: np.ndarray | None = None
    index_from: str | None = None
    keep_in: str | None = None

    @classmethod
    def empty(cls, m: int) -> "Previous":
        """Every one of the m samples new: a full search that also returns the state for the next version."""
        return cls(np.ones(m, dtype=bool))

    @property
    def old(self) -> np.ndarray:
        return np.flatnonzero(~self.new)

    def check(self, m: int, who: str) -> "Previous":
        """self, or ValueError when it describes another number of examined rows than m."""
        if len(self.new) != m:
            raise ValueError(f"{who}: the previous version's state covers {len(self.new)} rows of this version, "
                             f"but {m} samples are examined")
        return self


def _prior_top(previous: Previous, stored: np.ndarray | None, k: int, what: str) -> torch.Tensor:
    """M x k float32: the stored top-k of the old rows, EMPTY for the new rows; ValueError if missing."""
    top = torch.full((len(previous.new), k), EMPTY)
    if len(previous.old):
        if stored is None or stored.shape[1] != k:
            raise ValueError(f"the previous version's findings state holds no {what} with k = {k}; audit this "
                             "version in full (with a resume directory) to start a new chain")
        top[previous.old] = torch.from_numpy(np.asarray(stored, dtype=np.float32)[previous.old])
    return top


def _merge(top: torch.Tensor, targets: torch.Tensor, sims: torch.Tensor, dim: int = 1) -> None:
    """Merge a tile's similarities into the running top-k values of `targets`, in place: sims is len(targets)
    x C (dim=1: a row per target) or C x len(targets) (dim=0: a column per target). Where a target still has
    an empty slot (EMPTY: it has met fewer than k others) one top-k over the whole tile; else only the entries
    above the targets' k-th values can enter, and only those are merged (`_merge_pairs`). The same values either
    way. On the 100k audit's 32-d embeddings, 2 threads, against a top-k over every tile: an appended search of
    90k + 10k 15.6-21.3 s -> 8.7-9.5 s, an all-new one of 30k 9.3 s -> 6.7 s (session 23, two runs)."""
    kth = top[targets, -1]
    if bool((kth == EMPTY).any()):
        rows = sims if dim == 1 else sims.T
        top[targets] = torch.topk(torch.cat([top[targets], rows], dim=1), top.shape[1], dim=1).values
        return
    hit_a, hit_b = torch.nonzero(sims > (kth[:, None] if dim == 1 else kth[None, :]), as_tuple=True)
    if len(hit_a):
        _merge_pairs(top, targets[hit_a] if dim == 1 else targets[hit_b], sims[hit_a, hit_b])


@torch.no_grad()
def touching_tiles(similarity: Similarity, new: np.ndarray, top: torch.Tensor, keep_from: float,
                   block: int, nearest: tuple[torch.Tensor, torch.Tensor] | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair with at least one new member, once, tile by tile: (i, j, s) int64, int64, float32 of the
    pairs with s >= keep_from (i < j), and `top` (M x k values) updated in place with every computed pair.

    similarity(rows, cols) -> R x C for int64 row and column positions. The rows are ordered new first and the
    tiles cover new-row blocks x the columns from that block on (the upper triangle of the new rows): with
    every sample new this is the all-pairs search of image_similarity.image_pairs / view_search.view_pairs.
    nearest: (best, who), M each, updated in place with each image's nearest among the computed pairs
    (view_search.merge_nearest)."""
    block = check_block(block)
    order = torch.from_numpy(np.concatenate([np.flatnonzero(new), np.flatnonzero(~new)]).astype(np.int64))
    n, n_new = len(order), int(new.sum())
    found_i, found_j, found_s = [], [], []
    for r0 in range(0, n_new, block):
        rows = order[r0:min(r0 + block, n_new)]
        for c0 in range(r0, n, block):
            cols = order[c0:c0 + block]
            sims = similarity(rows, cols).float().cpu()
            if c0 == r0:
                sims.fill_diagonal_(EMPTY)
            ii, jj = torch.nonzero(sims >= keep_from, as_tuple=True)
            upper = ii + r0 < jj + c0
            found_i.append(rows[ii[upper]])
            found_j.append(cols[jj[upper]])
            found_s.append(sims[ii[upper], jj[upper]])
            _merge(top, rows, sims)
            own = len(rows) if c0 == r0 else 0  # a square tile's first columns are its rows: merged above
            if sims.shape[1] > own:
                _merge(top, cols[own:], sims[:, own:], dim=0)
            if nearest is not None:
                merge_nearest(*nearest, rows, cols, sims)
                merge_nearest(*nearest, cols, rows, sims.T)
            del sims
            release_heap()  # the tile's freed temporaries (heap.py; view_search.view_pairs measured ~45 MB a tile)
    if not found_i:
        return no_pairs()
    i, j, s = (torch.cat(t).numpy() for t in (found_i, found_j, found_s))
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    order_ = np.lexsort((hi, lo))
    return lo[order_].astype(np.int64), hi[order_].astype(np.int64), s[order_].astype(np.float32)


def knn_appended(embeddings: np.ndarray, k: int, previous: Previous, block: int,
                 device: str = "cpu") -> np.ndarray:
    """M x k float32: each row's k highest cosine similarities to the other rows, descending (the outliers'
    neighbours; knn_cosine's values): new rows searched against all, old rows' previous top-k merged with
    their similarities to the new rows. k is capped at M - 1."""
    x = normalized(embeddings, device)
    previous.check(len(x), "outliers")
    k = min(int(k), len(x) - 1)
    if k < 1:
        raise ValueError(f"k nearest neighbours need at least 2 samples and k >= 1 (have {len(x)} samples)")
    top = _prior_top(previous, previous.knn, k, "outlier neighbours")
    touching_tiles(lambda r, c: x[r] @ x[c].T, previous.new, top, 2.0, block)
    return top.numpy()


def near_links(images: Any, matcher: str, search: str, match: Any, views: Any, previous: Previous, block: int,
               device: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, dict[str, np.ndarray]]:
    """(i, j, s, pairs checked, state): the near-duplicate links with at least one new member, by the
    pixel matcher (`match`: ImageMatch; all new x all pairs), the multi-view matcher all pairs (`views`) or
    its streaming index (candidate pairs restricted to those touching a new sample; the previous version's
    index reused where it kept one: appended_index); with the views, each image's nearest neighbour below
    propose is aligned too (ViewMatch.nearest) where it is a new sample that beats the image's best old one.
    state: near_top (M x k top similarities) and, with the index, index_order (each index row's row)."""
    rule = match if matcher == "pixels" else views
    k = min(int(rule.k), max(len(previous.new) - 1, 1))
    top = _prior_top(previous, previous.near_top, k, "near-duplicate top similarities")
    prior = top[:, 0].clone()  # each old image's best similarity among the old samples (EMPTY for the new)
    state = {}
    if matcher == "views" and search == "index":
        kept = (None if previous.index_rows is None or previous.index_from is None
                else (previous.index_rows, str(previous.index_from)))
        i, j, s, score, state["index_order"] = index_pairs(images, views, previous.new, prior.numpy(), kept,
                                                           previous.keep_in)
        rows, vals = torch.from_numpy(np.concatenate([i, j])), torch.from_numpy(np.concatenate([s, s]))
        for start in range(0, len(rows), 1 << 20):  # each pair updates both of its images' top-k
            part = slice(start, start + (1 << 20))
            _merge_pairs(top, rows[part], vals[part])
        checked = len(i)
    else:
        if matcher == "pixels":
            tiles = _Tiles(thumbnails(images, match.thumb_size, block, device), match)
            similarity = tiles.similarity
            keep_from = min(rule.floor, rule.threshold) if rule.ratio > 0 else rule.threshold
        else:
            desc = all_views(images, views, device)
            similarity = lambda r, c: block_similarity(desc[r], desc[c], views)  # noqa: E731
            keep_from = views.propose  # the views propose, the aligned check decides (view_search.view_pairs)
            block = tile_side(block, views)  # a tile's search x anchor products within TILE_FLOATS
        nearest = None if matcher == "pixels" else (prior, torch.full(prior.shape, -1, dtype=torch.int64))
        i, j, s = touching_tiles(similarity, previous.new, top, keep_from, block, nearest)  # nearest: in place
        if matcher == "pixels":
            score = s
        else:  # with each image's nearest below propose (ViewMatch.nearest): a new partner beating its old best
            i, j, s, near = _with_nearest(i, j, s, nearest, views)
            score = aligned_scores(i, j, s, align_thumbnails(images, views), views, near)
        checked = int(previous.new.sum()) * len(previous.new)
    ok = link(i, j, score, top[:, -1].numpy(), rule)
    return i[ok], j[ok], score[ok], checked, {"near_top": top.numpy(), **state}


def _with_nearest(i: np.ndarray, j: np.ndarray, s: np.ndarray, nearest: tuple[torch.Tensor, torch.Tensor],
                  views: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, s, near): the proposed pairs (i, j, s, all >= ViewMatch.propose) followed by the nearest-neighbour
    pairs below propose (view_search.nearest_pairs of touching_tiles' `nearest`), near (bool) marking those."""
    ni, nj, ns = nearest_pairs(*nearest, views)
    near = np.concatenate([np.zeros(len(i), dtype=bool), np.ones(len(ni), dtype=bool)])
    return np.concatenate([i, ni]), np.concatenate([j, nj]), np.concatenate([s, ns]), near


def _merge_pairs(top: torch.Tensor, rows: torch.Tensor, vals: torch.Tensor) -> None:
    """Merge scattered (row, value) entries into the rows' top-k values, in place (rows may repeat)."""
    k = top.shape[1]
    order = torch.argsort(rows, stable=True)
    rows, vals = rows[order], vals[order]
    uniq, counts = torch.unique_consecutive(rows, return_counts=True)
    width = int(counts.max()) if len(counts) else 0
    if width == 0:
        return
    slot = torch.arange(len(rows)) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    dense = torch.full((len(uniq), width), EMPTY)
    dense[torch.repeat_interleave(torch.arange(len(uniq)), counts), slot] = vals.float()
    top[uniq] = torch.topk(torch.cat([top[uniq], dense], dim=1), k, dim=1).values


def embedding_links(embeddings: np.ndarray, threshold: float, previous: Previous, block: int,
                    device: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, s): the pairs with a new member whose cosine similarity (rows as given) is >= threshold."""
    x = normalized(embeddings, device)
    scratch = torch.full((len(x), 1), EMPTY)
    return touching_tiles(lambda r, c: x[r] @ x[c].T, previous.new, scratch, threshold, block)


def all_hashes(images: Any, previous: Previous) -> list[str]:
    """The M content hashes: the new samples' computed (duplicate_links.content_hashes), the old ones kept."""
    hashes = list(previous.hashes) if previous.hashes is not None else [None] * len(previous.new)
    fresh = np.flatnonzero(previous.new | np.array([h is None for h in hashes]))
    for start in range(0, len(fresh), INDEX_BATCH):
        rows = fresh[start:start + INDEX_BATCH]
        for row, h in zip(rows, content_hashes(images[rows])):
            hashes[int(row)] = h
    return hashes

