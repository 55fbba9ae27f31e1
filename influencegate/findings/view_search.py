"""How two images are compared (issue 14): the view similarity of a pair and of a block of pairs (it proposes
pairs), the aligned check of the proposed pairs (align.py: it decides), the absolute and relative linking
rule with each image's k-th best view similarity, the floor below which no link can change (for the bounded
check of duplicate_index.py), the stored anchors' DCT bounds, and the exhaustive all-pairs search. The
descriptors themselves are views.py's.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from influencegate.findings.align import align_pairs, thumbnails
from influencegate.findings.similarity import DEFAULT_BLOCK, check_block, no_pairs
from influencegate.findings.views import ViewMatch, _base, anchor_index, dct_matrix, search_count, view_descriptors
from influencegate.heap import release_heap

#: Proposed pairs per aligned-check batch (thumbnails of both sides: 2 x 2,048 x 3 x 32 x 32 floats, 50 MiB).
ALIGN_BATCH = 2048
#: Most floats of one block_similarity tile's products in view_pairs (64 MiB): its tiles are narrowed to fit.
#: At the defaults an image pair takes 35 search x 3 anchor products, so tiles of at most 399 x 399 images;
#: the Duplicates finding's block_size 2,048 would take 1.6 GiB per tile (measured: peak RSS 2.6 GB against
#: 1.3 GB for 2,000 images, benchmarks/results/allpairs_memory.json).
TILE_FLOATS = 1 << 24


def pair_similarity(views_a: torch.Tensor, views_b: torch.Tensor, match: ViewMatch) -> torch.Tensor:
    """P similarities s of row-aligned pairs: views_a, views_b P x V x D^2 (view_descriptors)."""
    search, anchors = search_count(match), anchor_index(match)
    ab = torch.einsum("pvd,pad->pva", views_a[:, :search], views_b[:, anchors]).amax(dim=(1, 2))
    ba = torch.einsum("pvd,pad->pva", views_b[:, :search], views_a[:, anchors]).amax(dim=(1, 2))
    return torch.maximum(ab, ba)


def tile_side(block_size: int, match: ViewMatch) -> int:
    """Images per side of view_pairs' tiles: block_size (>= 1), narrowed so that one tile's R x C x search x
    anchors products (block_similarity) fit in TILE_FLOATS."""
    per_pair = search_count(match) * len(anchor_index(match))
    return max(1, min(check_block(block_size), math.isqrt(TILE_FLOATS // per_pair)))


def block_similarity(rows: torch.Tensor, cols: torch.Tensor, match: ViewMatch) -> torch.Tensor:
    """R x C similarities of every row image with every column image (views R x V x D^2, C x V x D^2)."""
    search, anchors = search_count(match), anchor_index(match)
    r, c, n = rows.shape[0], cols.shape[0], rows.shape[2]
    ab = (rows[:, :search].reshape(-1, n) @ cols[:, anchors].reshape(-1, n).T)
    ab = ab.reshape(r, search, c, len(anchors)).amax(dim=(1, 3))
    ba = (rows[:, anchors].reshape(-1, n) @ cols[:, :search].reshape(-1, n).T)
    ba = ba.reshape(r, len(anchors), c, search).amax(dim=(1, 3))
    return torch.maximum(ab, ba)


def aligned_scores(i: np.ndarray, j: np.ndarray, s: np.ndarray, thumbs: Callable[[np.ndarray], torch.Tensor],
                   match: ViewMatch, nearest: np.ndarray | None = None) -> np.ndarray:
    """float32 P: the score max(s, aligned NCC, matched NCC) (align.align_pairs, match.alignment(); the matched
    NCC: the aligned overlap at its blurrier side's resolution, resolution.py) of each pair (i, j)
    whose view similarity s reaches match.propose (or marked in `nearest`, bool P: an image's nearest view
    neighbour, nearest_pairs / nearest_of) and whose aligned overlap shares texture (residual NCC after
    each image's 1-D profile >= match.texture: not two patches of one edge), -2 for the others (never linked).
    thumbs(rows): the M x K x b x b base thumbnails of those images (float, any intensity scale), reduced to
    match.align_side here; ALIGN_BATCH pairs at a time."""
    out = np.full(len(i), -2.0, dtype=np.float32)
    todo = np.flatnonzero((s >= match.propose) | (False if nearest is None else nearest))
    for start in range(0, len(todo), ALIGN_BATCH):
        rows = todo[start:start + ALIGN_BATCH]
        a, b = (thumbnails(thumbs(side[rows]), match.align_side) for side in (i, j))
        found = align_pairs(a, b, match.alignment())
        score = np.max(np.column_stack([found["score"].numpy(), s[rows], found["matched"].numpy()]), axis=1)
        out[rows] = np.where(found["residual"].numpy() >= match.texture, score, -2.0)
    return out


def align_thumbnails(images: torch.Tensor | np.ndarray, match: ViewMatch) -> Callable[[np.ndarray], torch.Tensor]:
    """rows -> those images' thumbnails for aligned_scores (`thumbs`), all M computed once from the M x C x H x W
    images (M x K x align_side^2 floats: 12 KiB per colour image)."""
    small = torch.cat([thumbnails(_base(images[r:r + DEFAULT_BLOCK], 3 * match.side, match.colour, "cpu"),
                                  match.align_side) for r in range(0, len(images), DEFAULT_BLOCK)])
    return lambda rows: small[torch.from_numpy(rows)]


def merge_nearest(best: torch.Tensor, who: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                  sims: torch.Tensor) -> None:
    """In place: best (M float) and who (M int64): each image's highest view similarity so far and that
    partner, updated with the R x C tile `sims` of the images at positions rows (R) x cols (C), rows' side."""
    value, arg = sims.max(dim=1)
    up = value > best[rows]
    best[rows[up]], who[rows[up]] = value[up], cols[arg[up]]


def nearest_pairs(best: torch.Tensor, who: torch.Tensor, match: ViewMatch,
                  keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, s), i < j, once each: every image's nearest view neighbour (merge_nearest's best, who) whose view
    similarity lies in [match.nearest, match.propose) (below it the views propose nothing; from propose on
    the pair is proposed anyway); keep (bool M): only those images' (None: all)."""
    b, w = best.numpy(), who.numpy()
    x = np.flatnonzero((w >= 0) & (b >= match.nearest) & (b < match.propose) & (True if keep is None else keep))
    lo, hi = np.minimum(x, w[x]).astype(np.int64), np.maximum(x, w[x]).astype(np.int64)
    _, first = np.unique(lo * len(b) + hi, return_index=True)
    return lo[first], hi[first], b[x[first]].astype(np.float32)


def nearest_of(i: np.ndarray, j: np.ndarray, s: np.ndarray, match: ViewMatch,
               prior: np.ndarray | None = None) -> np.ndarray:
    """bool P: the scored pairs (i, j, s) that are the nearest of i or of j among them (the highest s; ties:
    the first) with s in [match.nearest, match.propose); prior (M, None: none): each image's best similarity
    outside these pairs, which its nearest among them must reach."""
    rows, vals, pair = np.concatenate([i, j]), np.concatenate([s, s]), np.tile(np.arange(len(i)), 2)
    n = int(rows.max()) + 1 if len(rows) else 0
    first = row_maxima(rows, vals, n, 1)[:, 0]
    first = first[first >= 0]
    if prior is not None:
        first = first[vals[first] >= prior[rows[first]]]
    out = np.zeros(len(i), dtype=bool)
    out[pair[first]] = True
    return out & (s >= match.nearest) & (s < match.propose)


def row_maxima(rows: np.ndarray, vals: np.ndarray, n: int, k: int) -> np.ndarray:
    """int64 n x k: the positions in (rows, vals) of each row's k highest values, falling (ties: the first in
    array order, -0.0 = 0.0), -1 where the row has fewer entries. The order np.lexsort((-vals, rows)) gives,
    found by k rounds of two scatter reductions (the row's max, then its first position) instead of a sort:
    1 s a round against 16 s for the stable sort of 60M entries. rows: in [0, n); vals: float32, finite."""
    r = torch.from_numpy(np.asarray(rows, dtype=np.int64))
    v = torch.from_numpy(np.array(vals, dtype=np.float32))  # a copy: taken entries are set to -inf below
    alive = torch.ones(len(v), dtype=torch.bool)
    none, positions = len(v), torch.arange(len(v))
    out = np.full((n, k), -1, dtype=np.int64)
    for rank in range(k):
        best = torch.full((n,), -np.inf).scatter_reduce(0, r, v, "amax")
        pos = torch.where(alive & (v == best[r]), positions, torch.tensor(none))
        first = torch.full((n,), none, dtype=torch.int64).scatter_reduce(0, r, pos, "amin")
        has = first < none
        out[has.numpy(), rank] = first[has].numpy()
        alive[first[has]] = False
        v[first[has]] = -np.inf
    return out


def link(i: np.ndarray, j: np.ndarray, a: np.ndarray, kth: np.ndarray, match: ViewMatch) -> np.ndarray:
    """bool P: which pairs (i, j) with score a (aligned_scores) are linked by the absolute or relative
    rule; kth: N, each image's k-th highest view similarity (-1 where it has fewer than k scored partners)."""
    gap, gap_k = 1.0 - a, 1.0 - kth
    relative = (a >= match.floor) & (gap <= match.ratio * gap_k[i]) & (gap <= match.ratio * gap_k[j])
    return (a >= match.threshold) | relative


def kth_best(i: np.ndarray, j: np.ndarray, s: np.ndarray, n: int, k: int) -> np.ndarray:
    """N: each image's k-th highest similarity among the scored pairs (i, j, s) it is in (-1 if fewer)."""
    vals = np.concatenate([s, s]).astype(np.float32)
    at = row_maxima(np.concatenate([i, j]), vals, n, k)[:, k - 1]
    out = np.full(n, -1.0, dtype=np.float32)
    out[at >= 0] = vals[at[at >= 0]]
    return out


def all_views(images: torch.Tensor | np.ndarray, match: ViewMatch, device: str | torch.device = "cpu") -> torch.Tensor:
    """float32 M x V x (K D^2): view_descriptors of the M images, DEFAULT_BLOCK images at a time, written into
    one preallocated tensor (never a list of blocks plus their concatenation: half the peak)."""
    first = view_descriptors(images[:DEFAULT_BLOCK], match, device)
    views = torch.empty((len(images),) + tuple(first.shape[1:]), dtype=first.dtype, device=first.device)
    views[:len(first)] = first
    del first
    for s in range(DEFAULT_BLOCK, len(images), DEFAULT_BLOCK):
        views[s:s + DEFAULT_BLOCK] = view_descriptors(images[s:s + DEFAULT_BLOCK], match, device)
    return views


class Linkable:
    """The pairs of an all-pairs search that can still be linked, held while the search runs (view_pairs).
    Proposed pairs (view similarity >= propose) wait in a queue; each full batch of ALIGN_BATCH (the batches
    of aligned_scores over the whole proposal list, so every score is the same) gets the aligned check, and
    a pair is kept only while `link` holds for it with every image's k-th best view similarity so far: that
    only grows as tiles come in, so a pair it rejects now is rejected at the end too (the absolute rule does
    not depend on it; the relative one only gets stricter). Held: < ALIGN_BATCH + one tile's proposals
    queued, plus the pairs that can still link (the final links and the relative-rule pairs not yet ruled
    out), however many pairs were proposed. counts: proposed, aligned (checked), held_max (most pairs held,
    queued + kept, int)."""

    def __init__(self, thumbs: Callable[[np.ndarray], torch.Tensor], match: ViewMatch) -> None:
        self.thumbs, self.match = thumbs, match
        self.queue: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.queued = 0
        self.kept = no_pairs()
        self.counts = {"proposed": 0, "aligned": 0, "held_max": 0, "nearest": 0}

    def propose(self, i: np.ndarray, j: np.ndarray, s: np.ndarray, kth: np.ndarray) -> None:
        """Queue the pairs (i, j) of view similarity s (P each; all >= propose); check every full batch.
        kth: N, each image's k-th best view similarity so far (a lower bound of the final one)."""
        self.queue.append((i, j, s))
        self.queued += len(i)
        self.counts["proposed"] += len(i)
        self.counts["held_max"] = max(self.counts["held_max"], self.queued + len(self.kept[0]))
        if self.queued >= ALIGN_BATCH:
            self.check(kth, ALIGN_BATCH * (self.queued // ALIGN_BATCH))

    def check(self, kth: np.ndarray, count: int | None = None) -> None:
        """Aligned check of the first `count` queued pairs (all when None); keep those `link` still accepts
        with kth (N), and drop the kept pairs it no longer accepts."""
        i, j, s = (np.concatenate(t) for t in zip(*self.queue)) if self.queue else no_pairs()
        count = len(i) if count is None else count
        self.queue = [(i[count:], j[count:], s[count:])] if count < len(i) else []
        self.queued = len(i) - count
        a = aligned_scores(i[:count], j[:count], s[:count], self.thumbs, self.match)
        self.counts["aligned"] += count
        i, j, a = (np.concatenate([old, new[:count]]) for old, new in zip(self.kept, (i, j, a)))
        ok = link(i, j, a, kth, self.match)
        self.kept = (i[ok], j[ok], a[ok])

    def nearest(self, i: np.ndarray, j: np.ndarray, s: np.ndarray, kth: np.ndarray) -> None:
        """The aligned check of the nearest-neighbour pairs below propose (nearest_pairs: P each, checked all at
        once, at most one per image), kept as `check` keeps the proposed ones; counts["nearest"] gets P."""
        a = aligned_scores(i, j, s, self.thumbs, self.match, nearest=np.ones(len(i), dtype=bool))
        self.counts["aligned"] += len(i)
        self.counts["nearest"] += len(i)
        i, j, a = (np.concatenate([old, new]) for old, new in zip(self.kept, (i, j, a)))
        ok = link(i, j, a, kth, self.match)
        self.kept = (i[ok], j[ok], a[ok])


@torch.no_grad()
def view_pairs(images: torch.Tensor | np.ndarray, match: ViewMatch = ViewMatch(), block_size: int = 256,
               device: str | torch.device = "cpu", counts: dict[str, int] | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All linked pairs i < j (ViewMatch's rule), exhaustively (O(M^2) time): (i, j, a) as int64, int64,
    float32 (a: the score of aligned_scores) sorted by (i, j). Memory: the M x V x (K D^2) views (35 x 768
    floats = 105 KiB per colour image), the aligned check's thumbnails (12 KiB) plus one tile (block_size
    images a side, narrowed by tile_side to TILE_FLOATS products) and the pairs
    that can still link (Linkable: the proposed pairs are checked a batch at a time as the tiles propose them,
    never all held); then each image's nearest view neighbour below propose (ViewMatch.nearest; at most one
    pair per image). counts (when given) gets Linkable.counts: proposed, aligned, held_max, nearest."""
    block = tile_side(block_size, match)
    n = len(images)
    if n < 2:
        return no_pairs()
    views = all_views(images, match, device)
    top = torch.full((n, min(int(match.k), n - 1)), -2.0)
    kth = top[:, -1].numpy()  # a view: each image's k-th best so far, as the tiles come in
    held = Linkable(align_thumbnails(images, match), match)
    best, who = torch.full((n,), -2.0), torch.full((n,), -1, dtype=torch.int64)  # each image's nearest so far
    for r0 in range(0, n, block):
        for c0 in range(r0, n, block):
            sims = block_similarity(views[r0:r0 + block], views[c0:c0 + block], match).cpu()
            if c0 == r0:
                sims.fill_diagonal_(-2.0)
            rows, cols = slice(r0, r0 + sims.shape[0]), slice(c0, c0 + sims.shape[1])
            top[rows] = torch.topk(torch.cat([top[rows], sims], 1), top.shape[1], dim=1).values
            at_r, at_c = torch.arange(rows.start, rows.stop), torch.arange(cols.start, cols.stop)
            merge_nearest(best, who, at_r, at_c, sims)
            if c0 != r0:
                top[cols] = torch.topk(torch.cat([top[cols], sims.T], 1), top.shape[1], dim=1).values
                merge_nearest(best, who, at_c, at_r, sims.T)
            ii, jj = torch.nonzero(sims >= match.propose, as_tuple=True)
            upper = ii + r0 < jj + c0
            ii, jj = ii[upper], jj[upper]
            held.propose((ii + r0).numpy(), (jj + c0).numpy(), sims[ii, jj].numpy(), kth)
            del sims
            release_heap()  # the tile's freed temporaries (tens of MiB, heap.py): RSS grew ~45 MB per tile without
    held.check(kth)
    held.nearest(*nearest_pairs(best, who, match), kth)
    if counts is not None:
        counts.update(held.counts)
    i, j, s = held.kept
    order = np.lexsort((j, i))
    return i[order].astype(np.int64), j[order].astype(np.int64), s[order].astype(np.float32)


def prune_floor(match: ViewMatch) -> float:
    """The view similarity below which a pair's exact s cannot change any link (ViewMatch's rule): it is not
    proposed for the aligned check (s < propose), so not linked, and an image whose k-th best view similarity
    lies below c = 1 - (1 - floor) / ratio passes the relative test whatever that k-th best is (its pairs
    linkable at all have a >= floor, gap <= 1 - floor < ratio (1 - kth)). So a pair known to lie below
    min(propose, c) may carry any value below it (its upper bound): the same k-th best wherever that is
    >= c, the same links everywhere."""
    c = 1.0 - (1.0 - match.floor) / match.ratio if match.ratio > 0 else match.floor
    return float(min(match.propose, c))


def anchor_bounds(anchors: torch.Tensor, channels: int, low: int) -> np.ndarray:
    """float16 M x A' x (K low^2 + 1): the stored (float16) anchor views in the DCT basis cut to low x low
    per channel (their constant coefficient dropped: the search views are centred), then the norm of the
    rest rounded up, so that (search view bound) . (this) >= (search view) . (stored anchor) (views.view_bounds)."""
    v = anchors.float()
    m, a, f = v.shape
    side = int(round((f // channels) ** 0.5))
    t = min(int(low), side)
    c = torch.as_tensor(dct_matrix(side), dtype=torch.float32)
    coef = c @ v.reshape(m, a, channels, side, side) @ c.T
    total = v.reshape(m, a, channels, -1).square().sum(3) - coef[..., 0, 0].square()  # Parseval: all but DC
    coef[..., 0, 0] = 0.0
    cut = coef[..., :t, :t].reshape(m, a, -1)
    rest = (total.sum(2) - cut.square().sum(2)).clamp_min(0.0).sqrt().numpy()
    low16 = torch.cat([cut, torch.from_numpy(rest)[..., None]], dim=2).numpy().astype(np.float16)
    low16[..., -1] = np.nextafter(np.maximum(low16[..., -1], rest.astype(np.float16)), np.float16(np.inf))
    return low16
