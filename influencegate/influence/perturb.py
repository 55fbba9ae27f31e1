"""Perturbations x -> x_hat used by the Influence-SSL objective.

Every perturbation is deterministic given (seed, sample_id, draw index), so that `fit` and `score` (and the
exact reference) see exactly the same perturbed image of a sample, whatever the batch it falls in.
"""
from __future__ import annotations

import hashlib
import inspect
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

PerturbFn = Callable[[torch.Tensor, Sequence[str], int], torch.Tensor]
"""(images B x C x H x W, sample_ids, draw index k) -> perturbed images B x C x H x W."""


def sample_generator(seed: int, sample_id: str, salt: str = "") -> torch.Generator:
    """A CPU generator seeded from (seed, sample_id, salt) only: stable across batches, processes and machines."""
    digest = hashlib.blake2b(f"{seed}\x1f{sample_id}\x1f{salt}".encode(), digest_size=8).digest()
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    return gen


def gaussian_noise_draws(shape: Sequence[int], draws: int, generators: Sequence[torch.Generator],
                         orthogonal: bool) -> torch.Tensor:
    """K standard Gaussian noise tensors per sample, one generator per sample: B x K x *shape.

    With `orthogonal`, the K directions of a sample are made mutually orthogonal (QR of its Gaussian block)
    while each keeps its own chi-distributed norm, so every single draw still follows N(0, I) exactly; the
    draws are merely negatively dependent, which lowers the variance of the mean over draws (quasi-random).
    """
    dim = math.prod(shape)
    z = torch.stack([torch.randn(draws, dim, generator=g, dtype=torch.float64) for g in generators])
    if orthogonal and 1 < draws <= dim:
        norms = torch.stack([torch.randn(draws, dim, generator=g, dtype=torch.float64).norm(dim=1)
                             for g in generators])
        q, r = torch.linalg.qr(z.transpose(1, 2))  # B x dim x K, orthonormal columns
        q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2)).unsqueeze(1)  # Haar-distributed frames
        z = q.transpose(1, 2) * norms.unsqueeze(2)
    return z.reshape(len(generators), draws, *shape).float()


class Perturbation:
    """A named perturbation (or a composition "a+b+c") with its K-draw noise cache per sample.

    Names: gaussian (additive N(0, sigma^2) noise), crop (random resized crop, scale 0.5-1, resized back),
    flip (horizontal, p=0.5), jitter (brightness/contrast in normalised units, +-0.4), grayscale (p=0.2,
    channel mean), blur (3x3 Gaussian blur, p=0.5). Compositions apply left to right.
    """

    NAMES = ("gaussian", "crop", "flip", "jitter", "grayscale", "blur")

    def __init__(self, spec: str, sigma: float, draws: int, seed: int, orthogonal: bool = True,
                 common: bool = False) -> None:
        parts = [p.strip() for p in spec.split("+") if p.strip()]
        unknown = [p for p in parts if p not in self.NAMES]
        if not parts or unknown:
            raise ValueError(f"unknown perturbation {spec!r}; use one of {self.NAMES} or compositions like 'flip+jitter'")
        if len(set(parts)) < len(parts):
            raise ValueError(f"perturbation {spec!r} names a part twice; each of {self.NAMES} may appear once")
        self.parts, self.sigma, self.draws, self.seed, self.orthogonal = parts, sigma, draws, seed, orthogonal
        self.common = common
        self._noise_ids: tuple[str, ...] = ()
        self._noise = torch.empty(0)

    def _batch_noise(self, shape: Sequence[int], sample_ids: Sequence[str]) -> torch.Tensor:
        """All K noise draws of the batch, B x K x C x H x W (1 x K x ... with common noise, broadcast),
        cached while the batch is the same."""
        if self.common:  # common random numbers: draw k is the same noise tensor for every sample
            if self._noise.shape[2:] != tuple(shape):
                gen = sample_generator(self.seed, "common", "gauss")
                self._noise = gaussian_noise_draws(shape, self.draws, [gen], self.orthogonal)
            return self._noise
        ids = tuple(sample_ids)
        if ids != self._noise_ids:
            gens = [sample_generator(self.seed, sid, "gauss") for sid in ids]
            self._noise = gaussian_noise_draws(shape, self.draws, gens, self.orthogonal)
            self._noise_ids = ids
        return self._noise

    def __call__(self, images: torch.Tensor, sample_ids: Sequence[str], draw: int) -> torch.Tensor:
        noise = self._batch_noise(images.shape[1:], sample_ids)[:, draw] if "gaussian" in self.parts else None
        x = images
        if self.parts != ["gaussian"]:
            gens = [sample_generator(self.seed, sid, salt=f"draw{draw}") for sid in sample_ids]
            params = draw_parameters(self.parts, gens, x.shape[-2:])
        for part in self.parts:  # left to right, each for the whole batch on the images' device
            if part == "gaussian":
                x = x + self.sigma * noise.to(x.device, x.dtype)
            else:
                x = _APPLY[part](x, {name: value.to(x.device) for name, value in params[part].items()})
        return x


#: Uniform random numbers each non-Gaussian part draws per sample and draw index.
UNIFORMS = {"crop": 3, "flip": 1, "jitter": 2, "grayscale": 1, "blur": 1}


def draw_parameters(parts: Sequence[str], generators: Sequence[torch.Generator],
                    size: Sequence[int]) -> dict[str, dict[str, torch.Tensor]]:
    """The random parameters of each non-Gaussian part for every sample: {part: {name: tensor of B}}.

    Sample b draws its uniforms U[0, 1) in one call from generators[b] (float64, UNIFORMS[part] per part, the
    parts in order); the rest is computed for the whole batch. crop: scale = 0.5 + 0.5 u0 of the area, window
    height/width = max(1, round(side sqrt(scale))), top/left = floor(u1/u2 x (side - window + 1)); jitter:
    brightness = 0.8 (u0 - 0.5), contrast = 1 + 0.8 (u1 - 0.5); flip, grayscale, blur: u (applied below their
    probability).
    """
    h, w = size
    parts = [part for part in parts if part != "gaussian"]
    u = torch.stack([torch.rand(sum(UNIFORMS[part] for part in parts), generator=gen, dtype=torch.float64)
                     for gen in generators])
    out, column = {}, 0
    for part in parts:
        v = u[:, column:column + UNIFORMS[part]]
        column += UNIFORMS[part]
        if part == "crop":
            root = (0.5 + 0.5 * v[:, 0]).sqrt()
            height, width = (h * root).round().clamp(min=1), (w * root).round().clamp(min=1)
            out[part] = {"top": (v[:, 1] * (h - height + 1)).floor(), "left": (v[:, 2] * (w - width + 1)).floor(),
                         "height": height, "width": width}
        elif part == "jitter":
            out[part] = {"brightness": 0.8 * (v[:, 0] - 0.5), "contrast": 1.0 + 0.8 * (v[:, 1] - 0.5)}
        else:
            out[part] = {"u": v[:, 0]}
    return out


def _select(mask: torch.Tensor, changed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per sample (mask: B bools), the changed image or the original one."""
    return torch.where(mask.view(-1, 1, 1, 1), changed, x)


def _interpolation_matrices(start: torch.Tensor, length: torch.Tensor, size: int, dtype: torch.dtype) -> torch.Tensor:
    """B x size x size matrices that resize each sample's window [start, start + length) of an axis of `size`
    pixels back to `size` pixels: bilinear with align_corners=False and the edge clamping of F.interpolate
    (two weights per output pixel, summing to 1); start, length: B."""
    length = length.to(torch.float32).view(-1, 1)
    src = ((torch.arange(size, dtype=torch.float32, device=start.device) + 0.5) * (length / size) - 0.5).clamp(min=0)
    i0 = src.floor()
    weight = (src - i0).to(dtype)
    first = start.long().view(-1, 1)
    i1 = torch.minimum(i0 + 1, length - 1).long() + first
    matrices = torch.zeros(len(start), size, size, dtype=dtype, device=start.device)
    matrices.scatter_add_(2, (i0.long() + first).unsqueeze(2), (1 - weight).unsqueeze(2))
    return matrices.scatter_add_(2, i1.unsqueeze(2), weight.unsqueeze(2))


def _crop(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Random resized crop: each sample's window (scale 0.5-1 of the area) resized back to H x W, as
    rows (B x H x H) @ image @ columns^T (B x W x W) per channel."""
    rows = _interpolation_matrices(p["top"], p["height"], x.shape[2], x.dtype).unsqueeze(1)
    columns = _interpolation_matrices(p["left"], p["width"], x.shape[3], x.dtype).unsqueeze(1)
    return rows @ x @ columns.transpose(2, 3)


def _flip(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return _select(p["u"] < 0.5, x.flip(-1), x)


def _jitter(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast, brightness = (p[k].to(x.dtype).view(-1, 1, 1, 1) for k in ("contrast", "brightness"))
    return (x - mean) * contrast + mean + brightness


def _grayscale(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return _select(p["u"] < 0.2, x.mean(dim=1, keepdim=True).expand_as(x), x)


def _blur(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    k1 = torch.tensor([0.25, 0.5, 0.25], dtype=x.dtype, device=x.device)
    kernel = (k1[:, None] * k1[None, :]).expand(x.shape[1], 1, 3, 3)
    return _select(p["u"] < 0.5, F.conv2d(x, kernel, padding=1, groups=x.shape[1]), x)


_APPLY = {"crop": _crop, "flip": _flip, "jitter": _jitter, "grayscale": _grayscale, "blur": _blur}


def make_perturbation(spec: str | Callable, sigma: float, draws: int, seed: int, noise: str) -> PerturbFn:
    """Resolve the configured perturbation into a `PerturbFn`.

    A user callable `(images, sample_ids) -> images` is wrapped; it must itself be deterministic per sample
    (it receives the same ids in `fit` and `score`). A callable with a third `draw` argument gets it too.
    """
    if callable(spec):
        try:
            takes_draw = len(inspect.signature(spec).parameters) >= 3
        except (TypeError, ValueError):
            takes_draw = False
        return (lambda x, ids, k: spec(x, ids, k)) if takes_draw else (lambda x, ids, k: spec(x, ids))
    return Perturbation(spec, sigma=sigma, draws=draws, seed=seed, orthogonal=noise in ("orthogonal", "common"),
                        common=noise == "common")
