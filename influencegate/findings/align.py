"""Aligned check of a candidate near-duplicate pair: estimate the geometric relation, then compare (issue 14).

The view similarity (views.py) compares windows on a fixed grid, so a shift or crop that falls between two
grid points leaves a residual misalignment and true copies score 0.96-0.99, where natural look-alikes also
lie. Here each candidate pair (a, b) of thumbnails (K x n x n, the same b x b base as the views) is aligned
before it is compared:

  1. both thumbnails are blurred by a Gaussian of `sigma` pixels (band-limits them, so the bilinear resampling
     below is accurate to a fraction of a pixel);
  2. scale: the central window of side L = round(window * n) of one image (the "template") is resampled to
     every integer side t from round(min_scale * L) to L, i.e. the copy is hypothesised to show a window of
     side fraction t / L of the other image (crops to 75% and borders) or the same scale (t = L: shifts,
     JPEG, resizing, brightness); both directions (a in b and b in a), so one pair has 2 (L - t_min) + 1
     scale hypotheses;
  3. translation: for each hypothesis the normalised cross-correlation (NCC, per channel centred, all
     channels pooled; the template's own mean and the other image's local mean and variance over each t x t
     window, by FFT and box sums) at every whole-pixel position where the template lies fully inside the
     other image: the overlap is the whole template, at least (min_scale * window)^2 of an image's area;
  4. sub-pixel: for each hypothesis the peak's offset is refined by a parabola through the NCC at the peak
     and its neighbours along each axis, the other image is resampled there (bilinear, on the blurred image)
     and the NCC is recomputed; the hypothesis's score is the larger of the whole-pixel and the refined NCC,
     the pair's score the best hypothesis's;
  5. continuous scale (`refine` rounds, 3 by default): the integer template sides leave the scale up to half
     a side step off (2% at t = 26; a 75% crop, zoom 4/3, lies past the last side's 1.30), 0.25 px at the
     template's edge, which caps a crop's NCC at 0.96-0.99 at 32 px; a pattern search over the matched
     window's centre (row, column) and its pixel step (resample.window) from the best hypothesis raises it
     (tuning split: 32 px crops 0.975 -> 0.990 recall, with ViewMatch.threshold re-chosen 0.995 -> 0.997);
  6. texture: for the best hypothesis (refined), the NCC of the aligned overlap's residuals after each image's best
     1-D profile (edge_residual.py): two distinct patches of one edge or gradient align to 0.99+ as a copy
     does, but share no texture along it;
  7. one effective resolution (session 15): the pre-blur `sigma` is meant in the pixels of the searched image;
     a template resampled from a window zoom z = L / t times larger carried only sigma / z of it, so it is
     blurred by the rest, sigma * sqrt(1 - 1 / z^2) template pixels (x `zoom_blur`), and the searched image
     is resampled at fractional positions by bicubic interpolation (`sample`; bilinear blurs each pixel by
     a different amount, up to 0.25 px^2, with its fractional offset): fine texture (star fields, brick) no
     longer loses NCC to the resampling itself (tuning split: 32 px borders 0.90 -> 0.98, crops of the
     texture set 0.95 -> 0.98; a synthetic star field's 75-95% crops reach 0.997 in 40% -> 68% (zoom blur)
     of 60);
  8. matched resolution (session 16, resolution.py): the overlap's sharper side blurred by each of
     `match_sigmas` (0.5 px) against the other unblurred ("matched"): a copy enlarged from a window lost
     detail its original keeps; the score rule takes the best of the aligned and matched NCC.

The score is therefore the NCC of the aligned overlap: a copy scores near 1 whatever its shift or crop, up to
what the transformation itself destroys (JPEG, resizing, watermarks). Cost per pair: about
2 (L - t_min) + 1 FFT cross-correlations of K n x n images (13 of 3 x 32 x 32 at the defaults), one small
Gaussian blur per template, and 6 refine bicubic NCCs of the t x t window per round.

Pure core: numpy and torch only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from influencegate.findings.edge_residual import residual_ncc
from influencegate.findings.resolution import MATCH_SIGMAS, blurred_ncc, ncc
from influencegate.findings.resample import gauss_blur, window


#: A window (or template) whose variance is below this fraction of its image's variance per pixel is flat: its
#: NCC is 0 (a flat region matches nothing; identical blank images are found by the content hash).
FLAT = 1e-3
#: Variance (template pixels^2) of the triangle filter with which F.interpolate(antialias=True) reduces a window
#: to a template: half-width one output pixel, 1/6; the zoom blur adds only what it leaves (step 7).
ANTIALIAS_VAR = 1.0 / 6.0


@dataclass(frozen=True)
class Alignment:
    """Settings of the aligned check (module docstring): window (template side fraction), min_scale (smallest
    window fraction of a copy: crops to 75%), sigma (pre-blur, thumbnail pixels), flip (also align the
    mirrored template), refine (rounds of the continuous-scale search), zoom_blur and sample (comparison at
    one effective resolution, module docstring step 7: 1 and "bicubic"; 0 and "bilinear" = the check before
    session 15), match_sigmas (the sharper side's blurs of resolution.py; (): the check before session 16)."""

    window: float = 0.8
    min_scale: float = 0.75
    sigma: float = 0.7
    flip: bool = False
    refine: int = 3
    zoom_blur: float = 1.0
    sample: str = "bicubic"
    match_sigmas: tuple[float, ...] = MATCH_SIGMAS

    def __post_init__(self) -> None:
        if not 0.5 <= self.window <= 1.0 or not 0.5 <= self.min_scale <= 1.0:
            raise ValueError(f"window and min_scale are side fractions in [0.5, 1], got {self.window}, "
                             f"{self.min_scale}")
        if self.sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")
        if self.zoom_blur < 0 or self.sample not in ("bilinear", "bicubic") or min(self.match_sigmas, default=1) <= 0:
            raise ValueError(f"zoom_blur must be >= 0, sample 'bilinear' or 'bicubic', match_sigmas > 0, got "
                             f"{self.zoom_blur}, {self.sample!r}, {self.match_sigmas}")
        if int(self.refine) < 0:
            raise ValueError(f"refine is a number of search rounds >= 0, got {self.refine}")

    def sizes(self, n: int) -> tuple[int, list[int]]:
        """(L, template sides t) for n x n thumbnails."""
        big = max(2, n - 2 * int(round((1.0 - self.window) * n / 2)))  # n - big even: a centred window
        return big, list(range(max(2, int(round(self.min_scale * big))), big + 1))


class _Searched:
    """What the NCC maps need of the searched images (P x K x n x n) whatever the template side: their
    spectrum, the integral images of the pixels and their squares, and the flatness level per pixel."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images, self.n = images, images.shape[-1]
        self.spectrum = torch.fft.rfft2(images)
        self.sums = F.pad(images.cumsum(-1).cumsum(-2), (1, 0, 1, 0))
        self.squares = F.pad((images * images).cumsum(-1).cumsum(-2), (1, 0, 1, 0))
        self.level = FLAT * images.var(dim=(-2, -1)).sum(1)[:, None, None]  # the image's own variance per pixel

    def box(self, t: int, squares: bool) -> torch.Tensor:
        """P x K x (n - t + 1) x (n - t + 1): the sum over every t x t window."""
        c = self.squares if squares else self.sums
        return c[..., t:, t:] - c[..., :-t, t:] - c[..., t:, :-t] + c[..., :-t, :-t]


def ncc_maps(templates: torch.Tensor, searched: _Searched) -> torch.Tensor:
    """P x (n - t + 1) x (n - t + 1) NCC of each template (P x K x t x t) at every whole-pixel position inside
    its searched image: sum_k sum (T_k - mean T_k)(I_k - local mean I_k) / (|T - mean| |I - local mean|),
    0 where either side is flat (variance under FLAT of the image's own per pixel)."""
    t, n = templates.shape[-1], searched.n
    tc = templates - templates.mean(dim=(-2, -1), keepdim=True)
    padded = F.pad(tc, (0, n - t, 0, n - t))
    corr = torch.fft.irfft2(searched.spectrum * torch.fft.rfft2(padded).conj(), s=(n, n))
    corr = corr[..., :n - t + 1, :n - t + 1].sum(1)
    s1 = searched.box(t, squares=False)
    var = (searched.box(t, squares=True) - s1 * s1 / (t * t)).clamp_min(0.0).sum(1)
    tnorm = tc.square().sum(dim=(1, 2, 3))[:, None, None]
    level = searched.level * (t * t)
    ok = (var > level) & (tnorm > level) & (level > 0)
    return torch.where(ok, corr / (var * tnorm).sqrt().clamp_min(1e-30), torch.zeros_like(corr))


def _parabola(left: torch.Tensor, mid: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Offset in [-0.5, 0.5] of the vertex of the parabola through (-1, left), (0, mid), (1, right)."""
    curv = left - 2 * mid + right
    off = torch.where(curv < -1e-12, 0.5 * (left - right) / curv.clamp_max(-1e-12), torch.zeros_like(mid))
    return off.clamp(-0.5, 0.5)


def _window_ncc(templates: torch.Tensor, images: torch.Tensor, y: torch.Tensor, x: torch.Tensor,
                step: torch.Tensor | None, mode: str) -> torch.Tensor:
    """P NCC of each template (P x K x t x t) with its image (P x K x n x n) at the window
    resample.window(y, x, step, mode)."""
    return ncc(templates, window(images, y, x, templates.shape[-1], step, mode))


def _refine(templates: torch.Tensor, images: torch.Tensor, y: torch.Tensor, x: torch.Tensor,
            rounds: int, mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Continuous scale and sub-pixel translation of the best hypothesis: (NCC, y, x, step), each P, of each
    template (P x K x t x t) against its image (P x K x n x n) at resample.window(y, x, step, mode), by a
    pattern search from the whole-pixel-scale match at (y, x), step 1: per round each of the window's centre
    row, centre column (from +-0.25 px) and step (from +-0.5 / t: half the spacing of the integer template
    sides) moved both ways, a move kept where it raises the NCC, then every move halved. The integer sides
    leave the scale up to half a step off (2% at t = 26: 0.25 px at the template's edge, NCC 0.96-0.99 for a
    crop at 32 px)."""
    t = templates.shape[-1]
    half = (t - 1) / 2.0
    centre = [y + half, x + half]
    step = torch.ones_like(y)
    best = _window_ncc(templates, images, y, x, None, mode)
    moves = [0.25, 0.25, 0.5 / t]
    for _ in range(rounds):
        for axis in range(3):
            for sign in (1.0, -1.0):
                trial = [centre[0], centre[1], step]
                trial[axis] = trial[axis] + sign * moves[axis]
                got = _window_ncc(templates, images, trial[0] - half * trial[2], trial[1] - half * trial[2],
                                  trial[2], mode)
                better = got > best
                best = torch.where(better, got, best)
                centre[0], centre[1], step = (torch.where(better, new, old) for new, old in
                                              zip(trial, (centre[0], centre[1], step)))
        moves = [m / 2 for m in moves]
    return best, centre[0] - half * step, centre[1] - half * step, step


def _templates(images: torch.Tensor, big: int, t: int, flip: bool, sigma: float = 0.0) -> torch.Tensor:
    """P x K x t x t: the central big x big window of each image resampled to t x t (mirrored with flip), then
    blurred by a Gaussian of variance sigma^2 (1 - (t / big)^2) - ANTIALIAS_VAR template pixels^2 where that
    is positive (module docstring step 7; sigma 0: not)."""
    n = images.shape[-1]
    o = (n - big) // 2
    win = images[..., o:o + big, o:o + big]
    if flip:
        win = win.flip(-1)
    if t == big:
        return win
    out = F.interpolate(win, size=(t, t), mode="bilinear", align_corners=False, antialias=True)
    rest = sigma ** 2 * (1.0 - (t / big) ** 2) - ANTIALIAS_VAR
    if rest > 0:
        out = gauss_blur(out.reshape(-1, t, t), rest ** 0.5).reshape(out.shape)
    return out


def thumbnails(base: torch.Tensor, side: int) -> torch.Tensor:
    """M x K x b x b -> float32 M x K x s x s, s = min(side, b): the thumbnails the aligned check compares
    (antialiased bilinear; never upsampled)."""
    s = min(int(side), base.shape[-1])
    x = base.float()
    if x.shape[-1] == s:
        return x
    return F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)


@torch.no_grad()
def align_pairs(a: torch.Tensor, b: torch.Tensor, align: Alignment = Alignment()) -> dict[str, torch.Tensor]:
    """Aligned check of row-aligned pairs of thumbnails a, b (P x K x n x n, float32, any intensity scale;
    module docstring). Returns {"score": P aligned NCC, "zoom": P pixels of b per pixel of a (> 1: b shows a
    window of a, a crop; < 1: a shows a window of b, a border), "dy", "dx": P translation of b's content
    relative to a's, in pixels of the image that was searched (b when a_in_b, else a), "a_in_b": P bool, True
    when the template was a's window, searched in b, "residual": P texture evidence of that aligned overlap,
    edge_residual.residual_ncc (near the score for a textured copy, near 0 for two patches of one edge),
    "matched": P x len(align.match_sigmas) NCC of that overlap with its sharper side blurred by each sigma
    (resolution.blurred_ncc: the pair compared at the blurrier side's resolution)}."""
    if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"a and b must both be P x K x n x n, got {tuple(a.shape)} and {tuple(b.shape)}")
    p, n = a.shape[0], a.shape[-1]
    rows = torch.arange(p)
    a, b = (gauss_blur(x.float().reshape(-1, n, n), align.sigma).reshape(x.shape) for x in (a, b))
    big, sides = align.sizes(n)
    score = torch.full((p,), -2.0)
    found = torch.zeros(p, 3, dtype=torch.long)  # direction, t index, flip
    where = torch.zeros(p, 2)  # refined (y, x) of the matched window's top-left pixel
    for d, (src, dst) in enumerate(((a, b), (b, a))):
        searched = _Searched(dst)
        for f in range(2 if align.flip else 1):
            for ti, t in enumerate(sides):
                if d == 1 and t == big and f == 0:
                    continue  # the same-scale hypothesis once
                templates = _templates(src, big, t, bool(f), align.zoom_blur * align.sigma)
                maps = ncc_maps(templates, searched)
                w = maps.shape[-1]
                peak, pos = maps.reshape(p, -1).max(dim=1)
                y, x = pos // w, pos % w
                pad = F.pad(maps, (1, 1, 1, 1), value=float("nan"))
                up, down = pad[rows, y, x + 1], pad[rows, y + 2, x + 1]
                left, right = pad[rows, y + 1, x], pad[rows, y + 1, x + 2]
                oy = torch.where(up.isnan() | down.isnan(), torch.zeros_like(peak), _parabola(up, peak, down))
                ox = torch.where(left.isnan() | right.isnan(), torch.zeros_like(peak), _parabola(left, peak, right))
                yf, xf = y.float() + oy, x.float() + ox
                refined = _window_ncc(templates, dst, yf, xf, None, align.sample)
                here = torch.maximum(peak, refined)
                better = here > score
                score = torch.where(better, here, score)
                found[better] = torch.tensor([d, ti, f])
                where[better] = torch.where((refined >= peak)[:, None], torch.stack([yf, xf], 1),
                                            torch.stack([y.float(), x.float()], 1))[better]
    residual, step = torch.zeros(p), torch.ones(p)
    matched = torch.full((p, len(align.match_sigmas)), -2.0)
    for d, ti, f in torch.unique(found, dim=0).tolist():  # the best hypothesis, refined, per hypothesis
        rows_h = torch.nonzero((found == torch.tensor([d, ti, f])).all(1)).flatten()
        src, dst = (a, b) if d == 0 else (b, a)
        templates, dst = _templates(src[rows_h], big, sides[ti], bool(f), align.zoom_blur * align.sigma), dst[rows_h]
        if align.refine:
            fine, y, x, s = _refine(templates, dst, where[rows_h, 0], where[rows_h, 1], int(align.refine),
                                  align.sample)
            score[rows_h], where[rows_h], step[rows_h] = torch.maximum(fine, score[rows_h]), torch.stack([y, x], 1), s
        overlap = window(dst, where[rows_h, 0], where[rows_h, 1], sides[ti], step[rows_h], align.sample)
        residual[rows_h] = residual_ncc(templates, overlap)
        if align.match_sigmas:
            matched[rows_h] = blurred_ncc(templates, overlap, align.match_sigmas)
    t_found = torch.as_tensor(sides, dtype=torch.float32)[found[:, 1]]
    centred = (n - 1 - (t_found - 1) * step) / 2  # the top-left pixel centre of a centred window
    ratio = t_found * step / big
    a_in_b = found[:, 0] == 0
    sign = torch.where(a_in_b, 1.0, -1.0)
    return {"score": score, "zoom": torch.where(a_in_b, ratio, 1.0 / ratio),
            "dy": sign * (where[:, 0] - centred), "dx": sign * (where[:, 1] - centred), "a_in_b": a_in_b,
            "residual": residual, "matched": matched}
