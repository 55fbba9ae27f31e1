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
        if self.parts == ["gaussian"]:  # the default: one vectorised add on the images' device
            return images + self.sigma * noise.to(images.device, images.dtype)
        out = []
        for i, (image, sid) in enumerate(zip(images, sample_ids)):
            gen = sample_generator(self.seed, sid, salt=f"draw{draw}")
            x = image.detach().to("cpu", torch.float32)
            for part in self.parts:
                x = x + self.sigma * noise[i % len(noise)] if part == "gaussian" else _APPLY[part](x, gen)
            out.append(x)
        return torch.stack(out).to(images.device, images.dtype)


def _crop(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    _, h, w = x.shape
    scale = 0.5 + 0.5 * torch.rand((), generator=gen).item()
    ch, cw = max(1, round(h * math.sqrt(scale))), max(1, round(w * math.sqrt(scale)))
    top = int(torch.randint(0, h - ch + 1, (), generator=gen))
    left = int(torch.randint(0, w - cw + 1, (), generator=gen))
    patch = x[:, top:top + ch, left:left + cw].unsqueeze(0)
    return F.interpolate(patch, size=(h, w), mode="bilinear", align_corners=False).squeeze(0)


def _flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return x.flip(-1) if torch.rand((), generator=gen).item() < 0.5 else x


def _jitter(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    brightness = 0.8 * (torch.rand((), generator=gen).item() - 0.5)
    contrast = 1.0 + 0.8 * (torch.rand((), generator=gen).item() - 0.5)
    mean = x.mean()
    return (x - mean) * contrast + mean + brightness


def _grayscale(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if torch.rand((), generator=gen).item() < 0.2:
        return x.mean(dim=0, keepdim=True).expand_as(x).clone()
    return x


def _blur(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if torch.rand((), generator=gen).item() >= 0.5:
        return x
    k1 = torch.tensor([0.25, 0.5, 0.25])
    kernel = (k1[:, None] * k1[None, :]).expand(x.shape[0], 1, 3, 3)
    return F.conv2d(x.unsqueeze(0), kernel, padding=1, groups=x.shape[0]).squeeze(0)


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
