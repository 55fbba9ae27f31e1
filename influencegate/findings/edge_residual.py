"""Texture evidence of an aligned pair: the NCC of what is left after each image's best 1-D profile (issue 14).

At 32 px many natural patches are a single edge or a smooth gradient: almost all of their variance is a
function of one coordinate u (across the edge). Two distinct patches of the same edge, aligned over the
aligned check's shifts and scales (align.py), reproduce one another at NCC 0.99+, as a true copy does, so
the score alone cannot separate them (tuning split: 0.88-0.94 precision at 32 px for every score rule tried).
What separates them is the rest: a copy carries its original's texture along the edge, a distinct patch
carries texture of its own. So, per aligned pair (template T, window W of the other image, both t x t):

  1. the dominant gradient direction phi of T (grey structure tensor, 0.5 atan2(2 Jxy, Jxx - Jyy));
  2. the profile basis: piecewise-linear "hat" functions of u = y sin(phi) + x cos(phi) with knots every
     pixel (any 1-D profile, a sharp edge as well as a smooth ramp, up to linear interpolation at 1 px);
  3. each image's least-squares fit in that basis (per channel) removed: residuals r_T, r_W;
  4. the residual NCC: sum r_T r_W / (|r_T| |r_W|) over all channels (0 where either residual is below FLAT of
     its image's energy: a pure profile carries no texture evidence).

A textured copy keeps residual NCC near its score; two patches of one edge give residuals that share
nothing (tuning split, distinct pairs scoring >= 0.99: median 0.25). Operates on the already blurred images
of the aligned check. Cost per pair: O(K t^2) scatters and gathers (each pixel lies on two hat functions)
and one solve of about 1.4 t + 3 unknowns (40 at t = 26).

Pure core: torch only.
"""
from __future__ import annotations

import math

import torch

#: A residual below this fraction of its image's centred energy is numerical noise: its NCC is 0 (no evidence).
FLAT = 1e-8
#: Ridge of the normal equations, relative to each knot's weight (+ 1 for the knots no pixel reaches): keeps
#: them at 0 and the one free combination when the pixels lie midway between knots (phi = 0) bounded.
RIDGE = 1e-8


def gradient_direction(images: torch.Tensor) -> torch.Tensor:
    """P angles (radians) of the dominant gradient direction of P x K x t x t images (grey mean over K)."""
    g = images.double().mean(1)
    gy = g[:, 1:, :-1] - g[:, :-1, :-1]
    gx = g[:, :-1, 1:] - g[:, :-1, :-1]
    jxx, jyy, jxy = (gx * gx).sum((1, 2)), (gy * gy).sum((1, 2)), (gx * gy).sum((1, 2))
    return 0.5 * torch.atan2(2 * jxy, jxx - jyy)


def hat_weights(t: int, phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The profile basis of t x t images (row-major pixels, coordinates centred on the square): hat functions
    of u = y sin(phi) + x cos(phi) with knots 1 px apart covering the square; each pixel lies between two
    knots. Returns (left: int64 P x t^2, the pixel's left knot, w: float64 P x t^2, its weight on the knot to
    the right, 1 - w on the left one, knots: the number of knots)."""
    c = (t - 1) / 2
    axis = torch.arange(t, dtype=torch.float64) - c
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    u = yy.reshape(1, -1) * torch.sin(phi.double())[:, None] + xx.reshape(1, -1) * torch.cos(phi.double())[:, None]
    reach = math.ceil(c * math.sqrt(2)) + 1  # |u| <= c sqrt(2) < reach
    low = torch.floor(u)
    return (low + reach).long(), u - low, 2 * reach + 1


def profile_residuals(images: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """float64 P x t^2 x K (row-major pixels): each channel of P x K x t x t images minus its least-squares fit
    by a 1-D profile of u (angle phi per image, hat_weights), then centred; zero where the residual holds
    under FLAT of the image's centred energy (a pure profile: no texture to compare). The design matrix has
    two entries a row, so its products are scatters and gathers: O(P t^2 K) plus a knots^2 solve a pair."""
    p, k, t, _ = images.shape
    left, w, knots = hat_weights(t, phi)
    x = images.double().reshape(p, k, t * t).transpose(1, 2)
    sides = ((left, 1.0 - w), (left + 1, w))  # (knot, weight) of each pixel's two hat functions
    rhs = torch.zeros(p, knots, k, dtype=torch.float64)
    gram = torch.zeros(p, knots * knots, dtype=torch.float64)
    for knot, weight in sides:
        rhs.scatter_add_(1, knot[..., None].expand(-1, -1, k), weight[..., None] * x)
        for other, weight2 in sides:
            gram.scatter_add_(1, knot * knots + other, weight * weight2)
    gram = gram.reshape(p, knots, knots)
    gram = gram + torch.diag_embed(RIDGE * (gram.diagonal(dim1=1, dim2=2) + 1.0))
    coef = solve_one_thread(gram, rhs)
    fit = sum(weight[..., None] * coef.gather(1, knot[..., None].expand(-1, -1, k)) for knot, weight in sides)
    r = x - fit
    r = r - r.mean(1, keepdim=True)
    energy = (x - x.mean(1, keepdim=True)).square().sum((1, 2))
    return torch.where((r.square().sum((1, 2)) > FLAT * energy)[:, None, None], r, torch.zeros_like(r))


def solve_one_thread(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.linalg.solve(a, b) (a: P x n x n, b: P x n x K) on one torch thread, the pool's size restored after.
    The systems are small (n ~ 40): with 2 threads and the cores held by other processes the batched float64
    solve spun up to 20x slower (32 s against 1.5 s for the aligned pairs of 100,000 images); one thread does
    not wait on the pool, and the result is the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.solve(a, b)
    finally:
        torch.set_num_threads(threads)


def residual_ncc(templates: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """float32 P: NCC of the residuals of row-aligned templates and windows (P x K x t x t, aligned) after
    each one's best 1-D profile along the template's dominant gradient direction (module docstring)."""
    if templates.shape != windows.shape or templates.ndim != 4:
        raise ValueError(f"templates and windows must both be P x K x t x t, got {tuple(templates.shape)} and "
                         f"{tuple(windows.shape)}")
    phi = gradient_direction(templates)
    a, b = profile_residuals(templates, phi), profile_residuals(windows, phi)
    den = (a.square().sum((1, 2)) * b.square().sum((1, 2))).sqrt()
    return torch.where(den > 0, (a * b).sum((1, 2)) / den.clamp_min(1e-300), torch.zeros_like(den)).float()
