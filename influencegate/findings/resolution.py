"""The aligned overlap compared at the blurrier side's resolution (issue 14, session 16).

A copy that lost its high frequencies (a copy enlarged from a crop or a border's shrunk content; the points of a
star field) is, at the aligned position, close to its original low-passed, not to the original itself. So for an
aligned pair (template T, window W of the other image, both K x t x t, already pre-blurred by the aligned
check), the side with more energy above a 1 px Gaussian (`sharpness`) is blurred by each sigma of `sigmas` and
compared with the other side as it is; the best of those NCCs is the pair's matched NCC. Only the sharper side
is blurred: texture that one side has lost is explained away, texture both sides have (and differ in) is not, so
two distinct star fields stay apart, their own points in the unblurred side uncorrelated with the other's.

Cost per pair: len(sigmas) separable blurs and NCCs of K t x t images (the refine search does 18 NCCs).

Pure core: torch only.
"""
from __future__ import annotations

import torch

from influencegate.findings.resample import gauss_blur

#: Blurs (pixels of the aligned overlap) of the sharper side tried (align.Alignment.match_sigmas). Chosen on the
#: tuning split (session 16, benchmarks/duplicates_natural.py --tune-match: () / (0.5,) / (0.5, 1) / (1, 2) /
#: (0.5, 1, 1.5, 2) / six up to 3 x threshold 0.998 / 0.999, both tuning sets): every setting with a 0.5 px blur
#: ties at 22 of 24 cells and mean per-seed min(recall, precision) 0.9864 (none 0.9855), the fewest blurs win.
#: It lifts crops and borders (copies enlarged from a window: blurred), not the 32 px JPEG copies (< 0.01).
MATCH_SIGMAS = (0.5,)
#: Per-pixel variance below which an image (a resampled window or template, a blurred side) counts as flat in
#: ncc (the rounding noise of bicubic resampling and blurring a constant image is ~1e-14 per pixel).
TINY = 1e-10


def _centred(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(dim=(-2, -1), keepdim=True)


def sharpness(x: torch.Tensor) -> torch.Tensor:
    """P: the share of each P x K x t x t image's centred energy that a 1 px Gaussian removes (0 for flat)."""
    c = _centred(x)
    low = gauss_blur(c.reshape(-1, *c.shape[-2:]), 1.0).reshape(c.shape)
    total = c.square().sum(dim=(1, 2, 3))
    return torch.where(total > 0, (c - low).square().sum(dim=(1, 2, 3)) / total.clamp_min(1e-30),
                       torch.zeros_like(total))


def ncc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """P: NCC of row-aligned P x K x t x t images (all channels pooled, each centred); 0 where either is flat
    (rounding noise of a flat window is no texture). The aligned check's refined NCC (align._window_ncc)."""
    a, b = _centred(a), _centred(b)
    na, nb = a.square().sum(dim=(1, 2, 3)), b.square().sum(dim=(1, 2, 3))
    ok = (na > TINY * a[0].numel()) & (nb > TINY * a[0].numel())
    return torch.where(ok, (a * b).sum(dim=(1, 2, 3)) / (na * nb).sqrt().clamp_min(1e-30), torch.zeros_like(na))


def blurred_ncc(templates: torch.Tensor, windows: torch.Tensor,
                sigmas: tuple[float, ...] = MATCH_SIGMAS) -> torch.Tensor:
    """P x len(sigmas): NCC of the sharper side of each aligned pair (templates, windows: P x K x t x t) blurred
    by each sigma (pixels) with the other side unblurred (module docstring)."""
    if templates.shape != windows.shape or templates.ndim != 4:
        raise ValueError(f"templates and windows must both be P x K x t x t, got {tuple(templates.shape)} and "
                         f"{tuple(windows.shape)}")
    t_sharper = (sharpness(templates) >= sharpness(windows))[:, None, None, None]
    sharp, other = torch.where(t_sharper, templates, windows), torch.where(t_sharper, windows, templates)
    flat = sharp.reshape(-1, *sharp.shape[-2:])
    return torch.stack([ncc(gauss_blur(flat, s).reshape(sharp.shape), other) for s in sigmas], dim=1)

