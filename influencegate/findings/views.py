"""Multi-view low-frequency descriptors: near-duplicates by pixels at any resolution (issue 14).

Each image becomes a few unit vectors ("views"), all at a fixed descriptor side D (default 16), whatever its
own resolution:
  1. grey (mean over channels), resized with antialiasing to a base of B = 3 * D pixels (never upsampled past
     the image side: an 8 x 8 digit keeps B = 8);
  2. windows of that base, each resized (antialiased, bilinear, sub-pixel positions) to D x D: the whole
     image, and windows of side fraction `scales` (0.9, 0.8) centred at offsets on a grid of step `step`
     (0.05 of the side) up to (1 - scale) / 2 in each direction: 1 + 9 + 25 = 35 "search" views;
  3. every view blurred with a Gaussian of `blur` descriptor pixels (low-pass: a shift or scale left between
     two grid points moves edges by less than the blur, so NCC barely changes; this, not a lower threshold,
     is what makes the match sub-pixel robust), then centred and scaled to unit norm (so the dot product of
     two views is their normalised cross-correlation, invariant to brightness and contrast).
The "anchor" views are the centred windows (offset 0) of every scale: 1 + len(scales).

Similarity of a pair (a, b): s = max over (search view u of one image, anchor view v of the other, both
directions) of u . v. A shifted copy of a (window moved by up to 10% of the side) matches a search view of a
at scale 0.8 with the anchor of the copy at scale 0.8; a crop to 75-95% resized back (or an added border,
which is the inverse) matches a search view of scale 0.9 or 0.8 against the anchor at scale 1; JPEG,
resizing and brightness/contrast change the low frequencies little and match the whole-image views. With
flip=True the horizontally mirrored anchors are compared too.

Flat views (variance under FLAT_VAR of the image's own mean view variance, or an all-flat image) are zero
vectors: a flat region matches nothing (identical blank images are found by the content hash).

Cost per pair: 2 x 35 x (1 + len(scales)) dot products of D^2 = 256: ~54k multiply-adds. All pairs: O(M^2),
blockwise (`view_pairs`); above a few thousand images the candidate index (duplicate_index.py) proposes pairs
and this similarity checks only those.

Pure core: numpy and torch only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from influencegate.findings.similarity import DEFAULT_BLOCK, check_block

#: A view whose variance is below this fraction of its image's whole-view variance (or of 1e-6 in absolute
#: units after the global standardisation) is flat and matches nothing.
FLAT_VAR = 1e-3


@dataclass(frozen=True)
class ViewMatch:
    """Settings of the multi-view similarity (module docstring) and its link rule: a pair is a near-duplicate
    when s >= threshold (absolute), or when s >= floor and 1 - s <= ratio * (1 - s_k) for both images, s_k
    being that image's k-th highest similarity (relative: a copy stands out from its image's neighbourhood).
    side, scales, step, blur and colour are the method; threshold, floor, k and ratio the rule, chosen on the
    tuning split of benchmarks/natural_images.py (photos TUNE_PHOTOS at 32 and 128 px; grid of 96 rules in
    benchmarks/duplicates_natural.py): the rule with the highest worst-case min(recall, precision) over the
    families shift, crop, jpeg, resize, brightness, border at both sides (0.85 there; precision is what it
    loses, to natural look-alikes such as plain edges at 32 px).
    flip: also match horizontal mirrors (off by default: a mirrored photo is often a legitimate new sample).
    colour: views of each of the C channels, each centred, concatenated (a red edge on black is not a white
    edge on black); False = the grey mean only."""

    threshold: float = 0.998
    floor: float = 0.95
    k: int = 3
    ratio: float = 0.2
    side: int = 16
    scales: tuple[float, ...] = (0.9, 0.8)
    step: float = 0.05
    blur: float = 1.0
    flip: bool = False
    colour: bool = True

    def __post_init__(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold is a similarity in [-1, 1], got {self.threshold}")
        if int(self.side) < 4:
            raise ValueError(f"side must be >= 4, got {self.side}")
        if not all(0.5 <= s < 1.0 for s in self.scales):
            raise ValueError(f"scales are window side fractions in [0.5, 1), got {self.scales}")
        if int(self.k) < 1 or self.ratio < 0:
            raise ValueError(f"k must be >= 1 and ratio >= 0, got k={self.k}, ratio={self.ratio}")
        if self.step <= 0 or self.blur < 0:
            raise ValueError(f"step must be > 0 and blur >= 0, got {self.step}, {self.blur}")

    def windows(self) -> tuple[list[tuple[float, float, float]], list[int]]:
        """(windows as (scale, dy, dx) fractions of the side, the indices of the anchor windows)."""
        wins, anchors = [(1.0, 0.0, 0.0)], [0]
        for s in self.scales:
            reach = int(np.floor((1.0 - s) / 2 / self.step + 1e-9))
            offsets = [k * self.step for k in range(-reach, reach + 1)]
            anchors.append(len(wins) + (len(offsets) ** 2) // 2)
            wins.extend((s, dy, dx) for dy in offsets for dx in offsets)
        return wins, anchors


def _gauss(t: torch.Tensor, sigma: float) -> torch.Tensor:
    """B x H x W blurred by a separable Gaussian of `sigma` pixels (edges replicated), as two matrix products
    (much faster on the CPU than a one-channel convolution)."""
    if sigma <= 0:
        return t
    r = max(1, int(np.ceil(3 * sigma)))

    def matrix(n: int) -> torch.Tensor:  # n x n: out[i] = sum_j m[i, j] in[j], replicate padding folded in
        x = np.arange(-r, r + 1)
        k = np.exp(-x ** 2 / (2 * sigma ** 2))
        m = np.zeros((n, n))
        for i in range(n):
            np.add.at(m[i], np.clip(i + x, 0, n - 1), k / k.sum())
        return torch.as_tensor(m, dtype=t.dtype, device=t.device)

    return matrix(t.shape[-2]) @ t @ matrix(t.shape[-1]).T


def _base(images: torch.Tensor | np.ndarray, base: int, colour: bool, device: str | torch.device) -> torch.Tensor:
    """M x C x H x W (or M x H x W) -> float32 M x K x b x b, b = min(base, H, W), antialiased; K = C channels
    with colour, else 1 (grey mean)."""
    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"images must be M x C x H x W or M x H x W, got shape {tuple(x.shape)}")
    side = min(int(base), x.shape[-2], x.shape[-1])
    x = x.to(device=device, dtype=torch.float32)
    if not colour:
        x = x.mean(dim=1, keepdim=True)
    if x.shape[-2:] != (side, side):
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    return x


@torch.no_grad()
def view_descriptors(images: torch.Tensor | np.ndarray, match: ViewMatch = ViewMatch(),
                     device: str | torch.device = "cpu", only: Sequence[int] | None = None) -> torch.Tensor:
    """float32 M x V x (K D^2) unit (or zero) view vectors (K = C channels with colour, else 1) of a batch of
    images (module docstring); V = len(match.windows()[0]) (x 2 with flip: the mirrored views follow).
    only: the positions (in match.windows()[0]) of the windows to compute, in that order (V = len(only), x 2
    with flip); the first must be the whole image (0), the flatness reference. Memory: one batch; call it per
    chunk of a stream."""
    d = int(match.side)
    chans = _base(images, 3 * d, match.colour, device)
    m, k, b = chans.shape[0], chans.shape[1], chans.shape[-1]
    base = chans.reshape(m * k, b, b)
    wins, _ = match.windows()
    if only is not None:
        if not len(only) or int(only[0]) != 0:
            raise ValueError(f"only must start with the whole-image window 0, got {list(only)}")
        wins = [wins[int(w)] for w in only]
    theta = torch.zeros(len(wins), 2, 3, device=base.device)
    for w, (s, dy, dx) in enumerate(wins):  # affine_grid: output [-1, 1] -> input window, align_corners=False
        theta[w, 0, 0], theta[w, 1, 1] = s, s
        theta[w, 0, 2], theta[w, 1, 2] = 2 * dx, 2 * dy
    out_side = min(d, b)
    grid = F.affine_grid(theta, [len(wins), 1, out_side, out_side], align_corners=False)
    grid = grid.reshape(1, len(wins) * out_side, out_side, 2)  # the windows stacked vertically: one sample call
    # antialias a window of s * b base pixels onto out_side: pre-blur the base by the reduction factor
    pre = _gauss(base, max(0.0, 0.5 * (b / out_side - 1.0)))
    views = F.grid_sample(pre[:, None], grid.expand(m * k, -1, -1, -1), mode="bilinear", padding_mode="border",
                          align_corners=False)
    views = views.reshape(m * k * len(wins), out_side, out_side)
    views = _gauss(views, float(match.blur) * out_side / d).reshape(m, k, len(wins), out_side, out_side)
    if match.flip:
        views = torch.cat([views, views.flip(-1)], dim=2)
    views = views - views.mean(dim=(3, 4), keepdim=True)  # each channel of each view centred
    views = views.transpose(1, 2).reshape(m, views.shape[2], -1)
    var = (views ** 2).mean(dim=2, keepdim=True)
    floor = torch.maximum(FLAT_VAR * var[:, :1], torch.full_like(var[:, :1], 1e-12))
    return torch.where(var > floor, views * var.clamp_min(1e-30).rsqrt() / np.sqrt(views.shape[2]),
                       torch.zeros_like(views))


def anchor_index(match: ViewMatch) -> list[int]:
    """Positions of the anchor views in view_descriptors' V axis (with flip: the mirrored anchors too)."""
    wins, anchors = match.windows()
    return anchors + ([len(wins) + a for a in anchors] if match.flip else [])


def search_count(match: ViewMatch) -> int:
    """How many leading views of view_descriptors are search views (the mirrored ones are anchors only)."""
    return len(match.windows()[0])


def pair_similarity(views_a: torch.Tensor, views_b: torch.Tensor, match: ViewMatch) -> torch.Tensor:
    """P similarities s of row-aligned pairs: views_a, views_b P x V x D^2 (view_descriptors)."""
    search, anchors = search_count(match), anchor_index(match)
    ab = torch.einsum("pvd,pad->pva", views_a[:, :search], views_b[:, anchors]).amax(dim=(1, 2))
    ba = torch.einsum("pvd,pad->pva", views_b[:, :search], views_a[:, anchors]).amax(dim=(1, 2))
    return torch.maximum(ab, ba)


def block_similarity(rows: torch.Tensor, cols: torch.Tensor, match: ViewMatch) -> torch.Tensor:
    """R x C similarities of every row image with every column image (views R x V x D^2, C x V x D^2)."""
    search, anchors = search_count(match), anchor_index(match)
    r, c, n = rows.shape[0], cols.shape[0], rows.shape[2]
    ab = (rows[:, :search].reshape(-1, n) @ cols[:, anchors].reshape(-1, n).T)
    ab = ab.reshape(r, search, c, len(anchors)).amax(dim=(1, 3))
    ba = (rows[:, anchors].reshape(-1, n) @ cols[:, :search].reshape(-1, n).T)
    ba = ba.reshape(r, len(anchors), c, search).amax(dim=(1, 3))
    return torch.maximum(ab, ba)


def link(i: np.ndarray, j: np.ndarray, s: np.ndarray, kth: np.ndarray, match: ViewMatch) -> np.ndarray:
    """bool P: which scored pairs (i, j, s) are linked by the absolute or relative rule; kth: N, each image's
    k-th highest similarity (-1 where it has fewer than k scored partners)."""
    gap, gap_k = 1.0 - s, 1.0 - kth
    relative = (s >= match.floor) & (gap <= match.ratio * gap_k[i]) & (gap <= match.ratio * gap_k[j])
    return (s >= match.threshold) | relative


def kth_best(i: np.ndarray, j: np.ndarray, s: np.ndarray, n: int, k: int) -> np.ndarray:
    """N: each image's k-th highest similarity among the scored pairs (i, j, s) it is in (-1 if fewer)."""
    rows, vals = np.concatenate([i, j]), np.concatenate([s, s])
    order = np.lexsort((-vals, rows))
    rows, vals = rows[order], vals[order]
    start = np.searchsorted(rows, np.arange(n))
    count = np.searchsorted(rows, np.arange(n), side="right") - start
    out = np.full(n, -1.0, dtype=np.float32)
    has = count >= k
    out[has] = vals[start[has] + k - 1]
    return out


@torch.no_grad()
def view_pairs(images: torch.Tensor | np.ndarray, match: ViewMatch = ViewMatch(), block_size: int = 256,
               device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All linked pairs i < j (ViewMatch's rule), exhaustively (O(M^2)): (i, j, s) as int64, int64, float32
    sorted by (i, j). Memory: the M x V x (K D^2) views (35 x 768 floats = 105 KiB per colour image) plus
    one tile; every pair with s >= min(floor, threshold) and each image's top k are kept."""
    block = check_block(block_size)
    n = len(images)
    views = torch.cat([view_descriptors(images[s:s + DEFAULT_BLOCK], match, device)
                       for s in range(0, n, DEFAULT_BLOCK)]) if n else None
    keep_from = min(match.floor, match.threshold)
    k = min(int(match.k), max(n - 1, 1))
    top = torch.full((n, k), -2.0)
    found_i, found_j, found_s = [], [], []
    for r0 in range(0, n, block):
        for c0 in range(r0, n, block):
            sims = block_similarity(views[r0:r0 + block], views[c0:c0 + block], match).cpu()
            if c0 == r0:
                sims.fill_diagonal_(-2.0)
            ii, jj = torch.nonzero(sims >= keep_from, as_tuple=True)
            upper = ii + r0 < jj + c0
            found_i.append(ii[upper] + r0)
            found_j.append(jj[upper] + c0)
            found_s.append(sims[ii[upper], jj[upper]])
            rows, cols = slice(r0, r0 + sims.shape[0]), slice(c0, c0 + sims.shape[1])
            top[rows] = torch.topk(torch.cat([top[rows], sims], 1), k, dim=1).values
            if c0 != r0:
                top[cols] = torch.topk(torch.cat([top[cols], sims.T], 1), k, dim=1).values
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if n < 2:
        return empty
    i, j, s = (torch.cat(t).numpy() for t in (found_i, found_j, found_s))
    ok = link(i, j, s, top[:, -1].numpy(), match)
    i, j, s = i[ok], j[ok], s[ok]
    order = np.lexsort((j, i))
    return i[order].astype(np.int64), j[order].astype(np.int64), s[order].astype(np.float32)
