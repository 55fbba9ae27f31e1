"""Batched, seeded, torch-only augmentations of normalised images for SSL training (fast on CPU).

All random draws come from one CPU ``torch.Generator``, so a seed fixes the views on any device.
Pixels moved in from outside the image and erased pixels are 0, i.e. the dataset mean in normalised units.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SMALL_IMAGE_MAX_SIDE = 16


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of ``augment``.

    crop_scale: range of the random resized crop's area, as a fraction of the image ((1, 1) = no crop).
    crop_ratio: range of the crop's width / height.
    max_shift: largest integer translation in pixels per axis (pad-and-crop; 0 = none).
    hflip: flip horizontally with probability 1/2.
    noise_std: std of added Gaussian noise, normalised units.
    erase_prob: probability of erasing one rectangle per image.
    erase_scale: range of the erased rectangle's area, as a fraction of the image.
    """

    crop_scale: tuple[float, float] = (0.35, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    max_shift: int = 0
    hflip: bool = True
    noise_std: float = 0.1
    erase_prob: float = 0.25
    erase_scale: tuple[float, float] = (0.02, 0.15)


def default_augment_config(image_shape: tuple[int, int, int]) -> AugmentConfig:
    """Defaults by image size (C, H, W): small images (sides <= 16 px, e.g. 8 x 8 digits) get a mild crop,
    a 1-2 px shift and no flip (digits are not mirror-symmetric); larger ones the SimCLR-style crop and flip."""
    if max(image_shape[1:]) <= SMALL_IMAGE_MAX_SIDE:
        return AugmentConfig(crop_scale=(0.7, 1.0), max_shift=1, hflip=False, noise_std=0.2, erase_prob=0.3,
                             erase_scale=(0.05, 0.15))
    return AugmentConfig()


def _uniform(low: float, high: float, n: int, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _geometric(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Random resized crop, integer shift and flip in one affine resampling (bilinear; exact for pure shifts)."""
    n, _, h, w = images.shape
    area = _uniform(*config.crop_scale, n, generator)
    log_ratio = _uniform(math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1]), n, generator)
    # widths/heights as fractions of the image (affine_grid's coordinates span [-1, 1])
    # a crop wider (taller) than the image keeps its area by growing the other side, so area 1 = no crop
    crop_w = torch.sqrt(area * log_ratio.exp()).clamp(max=1.0)
    crop_h = (area / crop_w).clamp(max=1.0)
    crop_w = area / crop_h
    centre_x = (1 - crop_w) * _uniform(-1.0, 1.0, n, generator)
    centre_y = (1 - crop_h) * _uniform(-1.0, 1.0, n, generator)
    shift = torch.randint(-config.max_shift, config.max_shift + 1, (2, n), generator=generator).float()
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if config.hflip else torch.ones(n)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = crop_w * flip
    theta[:, 0, 2] = centre_x + 2 * shift[0] / w
    theta[:, 1, 1] = crop_h
    theta[:, 1, 2] = centre_y + 2 * shift[1] / h
    grid = F.affine_grid(theta.to(images.device, images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _erase(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Set one random rectangle per chosen image to 0 (the mean)."""
    n, _, h, w = images.shape
    area = _uniform(*config.erase_scale, n, generator) * h * w
    ratio = _uniform(math.log(0.3), math.log(3.3), n, generator).exp()
    eh = torch.sqrt(area / ratio).round().clamp(1, h)
    ew = torch.sqrt(area * ratio).round().clamp(1, w)
    top = (torch.rand(n, generator=generator) * (h - eh + 1)).floor()
    left = (torch.rand(n, generator=generator) * (w - ew + 1)).floor()
    chosen = torch.rand(n, generator=generator) < config.erase_prob
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    inside = (
        (rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1))
        & (cols >= left.view(n, 1, 1)) & (cols < (left + ew).view(n, 1, 1))
        & chosen.view(n, 1, 1)
    )
    return images.masked_fill(inside.unsqueeze(1).to(images.device), 0.0)


def augment(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """One random view of each image: crop/shift/flip, then erasing, then Gaussian noise.

    images: float B x C x H x W, normalised units, on any device. generator: a CPU torch.Generator.
    Returns a new tensor of the same shape, device and dtype.
    """
    out = _geometric(images, config, generator)
    out = _erase(out, config, generator)
    if config.noise_std > 0:
        noise = torch.randn(out.shape, generator=generator).to(out.device, out.dtype)
        out = out + config.noise_std * noise
    return out
