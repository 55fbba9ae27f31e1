"""Multi-view low-frequency descriptors: near-duplicates by pixels at any resolution (issue 14).

Each image becomes a few unit vectors ("views"), all at a fixed descriptor side D (default 16), whatever its
own resolution:
  1. grey (mean over channels), resized with antialiasing to a base of B = 3 * D pixels (never upsampled past
     the image side: an 8 x 8 digit keeps B = 8);
  2. windows of that base, each resized (antialiased, bilinear, sub-pixel positions) to D x D: the whole
     image, and windows of side fraction `scales` (0.9, 0.8) centred at offsets on a grid of step `step`
     (0.05 of the side) up to (1 - scale) / 2 in each direction: 1 + 9 + 25 = 35 "search" views;
  3. every view blurred with a Gaussian of `blur` descriptor pixels (low-pass: a shift or scale left between
     two grid points moves edges by less than the blur, so NCC changes little), then centred and scaled to
     unit norm (so the dot product of two views is their normalised cross-correlation, invariant to
     brightness and contrast).
The "anchor" views are the centred windows (offset 0) of every scale: 1 + len(scales).

Similarity of a pair (a, b): s = max over (search view u of one image, anchor view v of the other, both
directions) of u . v. A shifted copy of a (window moved by up to 10% of the side) matches a search view of a
at scale 0.8 with the anchor of the copy at scale 0.8; a crop to 75-95% resized back (or an added border,
which is the inverse) matches a search view of scale 0.9 or 0.8 against the anchor at scale 1; JPEG,
resizing and brightness/contrast change the low frequencies little and match the whole-image views. With
flip=True the horizontally mirrored anchors are compared too.

Flat views (variance under FLAT_VAR of the image's own mean view variance, or an all-flat image) are zero
vectors: a flat region matches nothing (identical blank images are found by the content hash).

The fixed grid leaves a residual misalignment (up to half a grid step in offset and scale): on the tuning
split true shifted and cropped copies score 0.96-0.99, where natural look-alikes (a single edge at 32 px)
also lie, so the view similarity only proposes pairs (s >= ViewMatch.propose); the aligned check (align.py:
scale and sub-pixel translation estimated per pair, NCC of the aligned overlap) decides.

Cost per pair: 2 x 35 x (1 + len(scales)) dot products of D^2 = 256: ~54k multiply-adds. All pairs: O(M^2),
blockwise (`view_pairs`); above a few thousand images the candidate index (duplicate_index.py) proposes pairs
and this similarity checks only those.

Pure core: numpy and torch only.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from influencegate.findings.align import Alignment
from influencegate.findings.resample import gauss_matrix

#: A view whose variance is below this fraction of its image's whole-view variance (or of 1e-6 in absolute
#: units after the global standardisation) is flat and matches nothing.
FLAT_VAR = 1e-3


@dataclass(frozen=True)
class ViewMatch:
    """Settings of the multi-view similarity (module docstring), of the aligned check (align.py) and of the
    link rule. side, scales, step, blur and colour make the views; a pair whose view similarity reaches
    `propose` gets the aligned check (thumbnails of `align_side` px, pre-blur `align_sigma` px, copies down to
    `min_scale` of the side, mirrored too with flip); a pair whose aligned overlap shares no texture (residual
    NCC after each image's best 1-D profile below `texture`, edge_residual.py: two patches of one edge or
    gradient) is never linked; otherwise its score a = max(view similarity, aligned NCC)
    decides (the aligned NCC is sharper; the views are blurred more and keep heavy JPEG copies): a
    near-duplicate when a >= threshold (absolute), or when a >= floor and 1 - a <= ratio * (1 - s_k) for
    both images, s_k being that image's k-th highest view similarity (relative: a copy stands out from its
    image's neighbourhood).
    The rule was chosen on the tuning split of benchmarks/natural_images.py (photos TUNE_PHOTOS at 32 and
    128 px, planting seeds 0, 10, 11; benchmarks/duplicates_natural.py --tune): the highest worst-case
    min(recall, precision) over shift, crop, jpeg, resize, brightness, border at both sides; `texture` there
    too, with the rule fixed (--tune-texture, select_texture: the most family cells at recall and precision
    >= 0.95, ties by the mean of min(recall, precision); -1 switches the test off); `threshold` (was 0.995)
    again with the aligned check's continuous scale refinement (align.Alignment.refine; --tune-refine, the
    same criterion: 0.997); session 15 (--tune-zoom, both tuning sets, the texture one with fine texture:
    benchmarks/natural_images.TEXTURE_TUNE_PHOTOS) `threshold` 0.998 with the aligned check's zoom blur and
    bicubic resampling (align.Alignment) and `nearest`, the same criterion.
    nearest: each image's nearest view neighbour (highest view similarity) is aligned too when that similarity
    reaches `nearest`, even below `propose` (a crop to 75-78% of a fine texture falls between the view grid's
    scales: view similarity 0.77 at 224 px, aligned 0.98); above `propose`: off.
    flip: also match horizontal mirrors (off by default: a mirrored photo is often a legitimate new sample).
    colour: views of each of the C channels, each centred, concatenated (False = the grey mean only).
    code_blur: blur of the views the index's codes are projected from (duplicate_index.py; None = `blur`).
    code_corners: codes of the smallest scale's windows offset +-this (code_candidates.code_windows; 0: anchors')."""

    threshold: float = 0.998
    floor: float = 0.95
    k: int = 3
    ratio: float = 0.1
    side: int = 16
    scales: tuple[float, ...] = (0.9, 0.8)
    step: float = 0.05
    blur: float = 1.0
    flip: bool = False
    colour: bool = True
    propose: float = 0.9
    align_side: int = 32
    align_sigma: float = 1.0
    min_scale: float = 0.75
    code_blur: float | None = None
    texture: float = 0.5
    nearest: float = 0.7
    code_corners: float = 0.05

    def __post_init__(self) -> None:
        if not (-1.0 <= self.threshold <= 1.0 and -1.0 <= self.propose <= 1.0):
            raise ValueError(f"threshold and propose are similarities in [-1, 1], got {self.threshold}, "
                             f"{self.propose}")
        if int(self.side) < 4 or int(self.align_side) < 4:
            raise ValueError(f"side and align_side must be >= 4, got {self.side}, {self.align_side}")
        if not all(0.5 <= s < 1.0 for s in self.scales):
            raise ValueError(f"scales are window side fractions in [0.5, 1), got {self.scales}")
        if int(self.k) < 1 or self.ratio < 0:
            raise ValueError(f"k must be >= 1 and ratio >= 0, got k={self.k}, ratio={self.ratio}")
        if not -1.0 <= self.nearest <= 1.0:
            raise ValueError(f"nearest is a view similarity in [-1, 1] (above propose: off), got {self.nearest}")
        if not -1.0 <= self.texture <= 1.0:
            raise ValueError(f"texture is a residual NCC in [-1, 1] (-1: off), got {self.texture}")
        if self.step <= 0 or self.blur < 0 or (self.code_blur is not None and self.code_blur < 0) or not \
                0.0 <= self.code_corners < 0.5:
            raise ValueError(f"step must be > 0, blur and code_blur >= 0, code_corners in [0, 0.5), got {self.step}, "
                             f"{self.blur}, {self.code_blur}, {self.code_corners}")

    def alignment(self) -> Alignment:
        """The aligned check's settings (align.py)."""
        return Alignment(min_scale=self.min_scale, sigma=self.align_sigma, flip=self.flip)

    def windows(self) -> tuple[list[tuple[float, float, float]], list[int]]:
        """(windows as (scale, dy, dx) fractions of the side, the indices of the anchor windows)."""
        wins, anchors = [(1.0, 0.0, 0.0)], [0]
        for s in self.scales:
            reach = int(np.floor((1.0 - s) / 2 / self.step + 1e-9))
            offsets = [k * self.step for k in range(-reach, reach + 1)]
            anchors.append(len(wins) + (len(offsets) ** 2) // 2)
            wins.extend((s, dy, dx) for dy in offsets for dx in offsets)
        return wins, anchors


def _sampler(n_in: int, n_out: int, scale: float, offset: float) -> np.ndarray:
    """n_out x n_in float64: 1-D bilinear resampling of the window (scale, offset) as F.affine_grid +
    F.grid_sample(mode="bilinear", padding_mode="border", align_corners=False) do it along one axis."""
    out = (2 * np.arange(n_out) + 1) / n_out - 1  # output pixel centres, normalised
    pos = ((scale * out + 2 * offset + 1) * n_in - 1) / 2  # input pixel coordinates
    pos = np.clip(pos, 0, n_in - 1)  # border padding
    lo = np.floor(pos).astype(int)
    w = pos - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1 - w
    hi = np.minimum(lo + 1, n_in - 1)
    m[np.arange(n_out), hi] += w
    return m


def dct_matrix(n: int) -> np.ndarray:
    """n x n orthonormal DCT-II: row f is the f-th cosine (row 0 the constant)."""
    k = np.arange(n)
    m = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


@lru_cache(maxsize=32)
def _axis_operators(b: int, d: int, blur: float, windows: tuple[tuple[float, float], ...],
                    basis: str) -> torch.Tensor:
    """float32 len(windows) x out_side x b: for each (scale, offset) along one axis the linear map from the
    base pixels to that window's view pixels (pre-blur by the reduction factor, bilinear window, blur; then
    the orthonormal DCT with basis="dct")."""
    out_side = min(d, b)
    pre = gauss_matrix(b, max(0.0, 0.5 * (b / out_side - 1.0)))
    post = gauss_matrix(out_side, float(blur) * out_side / d)
    ops = [post @ _sampler(b, out_side, s, o) @ pre for s, o in windows]
    if basis == "dct":
        c = dct_matrix(out_side)
        ops = [c @ op for op in ops]
    return torch.as_tensor(np.stack(ops), dtype=torch.float32)


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


def _window_products(images: torch.Tensor | np.ndarray, match: ViewMatch, device: str | torch.device,
                     only: Sequence[int] | None, basis: str):
    """The un-normalised views of the requested windows, per window scale: (m, k, out_side, windows,
    [(positions of that scale's windows in `windows`, dys, dxs, z)]) with z MK x len(dys) x out x
    (len(dxs) [x 2 with flip]) x out (view_descriptors)."""
    if basis not in ("pixel", "dct"):
        raise ValueError(f"basis must be 'pixel' or 'dct', got {basis!r}")
    d = int(match.side)
    chans = _base(images, 3 * d, match.colour, device)
    m, k, b = chans.shape[0], chans.shape[1], chans.shape[-1]
    base = chans.reshape(m * k, b, b)
    wins, _ = match.windows()
    if only is not None:
        if not len(only) or int(only[0]) != 0:
            raise ValueError(f"only must start with the whole-image window 0, got {list(only)}")
        wins = [wins[int(w)] for w in only]
    out_side = min(d, b)
    parts = []
    for scale in dict.fromkeys(s for s, _, _ in wins):  # one pair of products per window scale
        here = [w for w, (s, _, _) in enumerate(wins) if s == scale]
        dys = sorted({wins[w][1] for w in here})
        dxs = sorted({wins[w][2] for w in here})
        rows = _axis_operators(b, d, match.blur, tuple((scale, o) for o in dys), basis).to(base.device)
        cols = _axis_operators(b, d, match.blur, tuple((scale, o) for o in dxs), basis).to(base.device)
        if match.flip:  # a mirrored view: its columns reversed (in the DCT basis: odd frequencies negated)
            flipped = cols.flip(1) if basis == "pixel" else cols * _flip_signs(out_side, cols)
            cols = torch.cat([cols, flipped])
        y = torch.matmul(rows.reshape(-1, b), base)  # MK x (dys x out) x b
        z = torch.matmul(y, cols.reshape(-1, b).T)  # MK x (dys x out) x (dxs [+ mirrored] x out)
        parts.append((here, dys, dxs, z.reshape(m * k, len(dys), out_side, -1, out_side)))
    return m, k, out_side, wins, parts


@torch.no_grad()
def view_descriptors(images: torch.Tensor | np.ndarray, match: ViewMatch = ViewMatch(),
                     device: str | torch.device = "cpu", only: Sequence[int] | None = None,
                     basis: str = "pixel") -> torch.Tensor:
    """float32 M x V x (K D^2) unit (or zero) view vectors (K = C channels with colour, else 1) of a batch of
    images (module docstring); V = len(match.windows()[0]) (x 2 with flip: the mirrored views follow).
    only: the positions (in match.windows()[0]) of the windows to compute, in that order (V = len(only), x 2
    with flip); the first must be the whole image (0), the flatness reference. basis: "pixel" (each channel a
    D x D image, row-major) or "dct" (each channel's 2-D orthonormal DCT coefficients, D x D row-major, low
    frequencies first in each axis): an orthonormal change of basis per channel, so every dot product is the
    same. Each window is a separable linear map of the base (pre-blur, bilinear window, blur: the operators
    of F.grid_sample and the Gaussian as matrices, two matrix products per scale). Memory: one batch; call it
    per chunk of a stream."""
    m, k, out_side, wins, parts = _window_products(images, match, device, only, basis)
    mirrors = 2 if match.flip else 1
    views = torch.empty(m, mirrors * len(wins), k, out_side, out_side)
    for here, dys, dxs, z in parts:
        z = z.reshape(m, k, len(dys), out_side, mirrors * len(dxs), out_side)
        for f in range(mirrors):
            block = z[..., f * len(dxs):(f + 1) * len(dxs), :].permute(0, 2, 4, 1, 3, 5)  # m dys dxs k D D
            if here == list(range(here[0], here[0] + len(dys) * len(dxs))):  # a whole grid, dy-major: one copy
                start = f * len(wins) + here[0]
                views[:, start:start + len(here)] = block.reshape(m, len(here), k, out_side, out_side)
            else:
                for w in here:
                    views[:, f * len(wins) + w] = block[:, dys.index(wins[w][1]), dxs.index(wins[w][2])]
    if basis == "pixel":
        views -= views.mean(dim=(3, 4), keepdim=True)  # each channel of each view centred
    else:
        views[..., 0, 0] = 0.0  # the constant coefficient: centring
    views = views.reshape(m, views.shape[1], -1)
    norm = torch.linalg.vector_norm(views, dim=2, keepdim=True)
    var = norm ** 2 / views.shape[2]
    floor = torch.maximum(FLAT_VAR * var[:, :1], torch.full_like(var[:, :1], 1e-12))
    views *= torch.where(var > floor, 1.0 / norm.clamp_min(1e-30), torch.zeros_like(norm))
    return views


@torch.no_grad()
def view_bounds(images: torch.Tensor | np.ndarray, match: ViewMatch = ViewMatch(), low: int = 6,
                device: str | torch.device = "cpu", only: Sequence[int] | None = None) -> torch.Tensor:
    """float32 M x V x (K low^2 + 1): each view (view_descriptors, same V) in the DCT basis cut to its
    low x low lowest frequencies per channel, then the norm of the rest appended (r = sqrt(1 - |low part|^2);
    0 for a flat view). For two views u, v: u . v <= u_low . v_low + r_u r_v (Cauchy-Schwarz on the rest),
    which is the dot product of these vectors: an upper bound of every view similarity at K low^2 + 1 numbers
    instead of K D^2."""
    m, k, out_side, wins, parts = _window_products(images, match, device, only, "dct")
    t = min(int(low), out_side)
    mirrors = 2 if match.flip else 1
    out = torch.empty(m, mirrors * len(wins), k * t * t + 1)
    for here, dys, dxs, z in parts:  # z: MK x dys x D x cols x D
        z[:, :, 0, :, 0] = 0.0  # each channel's constant coefficient: centring (left out, not subtracted)
        cut = z[:, :, :t, :, :t].reshape(m, k, len(dys), t, -1, t).permute(0, 2, 4, 1, 3, 5).reshape(
            m, len(dys), z.shape[3], k * t * t)  # m x dys x cols x (k t t): one copy
        # m x dys x cols: centred sum of squares of all channels, z squared in place (not read again), the last
        # axis summed first (a norm over the strided axes 2 and 4, or a squared copy, cost a third of the time)
        sq = z.square_().sum(-1).sum(2).reshape(m, k, len(dys), -1).sum(1)
        iy = torch.tensor([dys.index(wins[w][1]) for w in here])
        for f in range(mirrors):  # every window of this scale at once
            ix = torch.tensor([f * len(dxs) + dxs.index(wins[w][2]) for w in here])
            out[:, [f * len(wins) + w for w in here]] = torch.cat([cut[:, iy, ix], sq[:, iy, ix, None]], dim=-1)
    sq = out[:, :, -1:].clamp_min(0.0)
    var = sq / (k * out_side * out_side)
    floor = torch.maximum(FLAT_VAR * var[:, :1], torch.full_like(var[:, :1], 1e-12))
    scale = torch.where(var > floor, sq.clamp_min(1e-30).rsqrt(), torch.zeros_like(sq))
    out[:, :, :-1] *= scale
    low_sq = (out[:, :, :-1] ** 2).sum(2, keepdim=True)
    out[:, :, -1:] = torch.where(var > floor, (1.0 - low_sq).clamp_min(0.0).sqrt(), torch.zeros_like(sq))
    return out


def _flip_signs(n: int, like: torch.Tensor) -> torch.Tensor:
    """1 x 1 x n column of (-1)^f: reversing a signal negates its odd DCT-II coefficients."""
    return torch.as_tensor((-1.0) ** np.arange(n), dtype=like.dtype, device=like.device)[None, :, None]


def anchor_index(match: ViewMatch) -> list[int]:
    """Positions of the anchor views in view_descriptors' V axis (with flip: the mirrored anchors too)."""
    wins, anchors = match.windows()
    return anchors + ([len(wins) + a for a in anchors] if match.flip else [])


def search_count(match: ViewMatch) -> int:
    """How many leading views of view_descriptors are search views (the mirrored ones are anchors only)."""
    return len(match.windows()[0])
