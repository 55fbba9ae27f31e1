"""``build_encoder``: architecture names to freshly initialised encoders."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from influencegate.models.backbones import cifar_resnet18, torchvision_encoder
from influencegate.models.small_cnn import SmallCNN

TORCHVISION_PREFIX = "torchvision:"

ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": SmallCNN,
    "cifar_resnet18": cifar_resnet18,
}


def build_encoder(arch: str, seed: int | None = None, **kwargs: object) -> nn.Module:
    """A randomly initialised encoder: "small_cnn", "cifar_resnet18" or "torchvision:<model name>".

    seed: initial weights drawn from torch.manual_seed(seed) (the global RNG is left as it was); None draws
    them from the global RNG (which advances, so two unseeded encoders differ). kwargs go to the constructor (e.g. ``in_channels=3`` for small_cnn). Raises
    ValueError for an unknown arch.
    """
    if not arch.startswith(TORCHVISION_PREFIX) and arch not in ENCODERS:
        raise ValueError(f"unknown encoder arch {arch!r}; use one of {', '.join(ENCODERS)} or 'torchvision:<name>'")
    if seed is None:
        return _construct(arch, kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _construct(arch, kwargs)


def _construct(arch: str, kwargs: dict[str, object]) -> nn.Module:
    if arch.startswith(TORCHVISION_PREFIX):
        return torchvision_encoder(arch[len(TORCHVISION_PREFIX):], **kwargs)
    return ENCODERS[arch](**kwargs)
