"""``build_encoder``: architecture names to freshly initialised encoders."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from influencegate.models.backbones import cifar_resnet18, torchvision_encoder
from influencegate.models.small_cnn import SmallCNN

TORCHVISION_PREFIX = "torchvision:"

ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": SmallCNN,
    "cifar_resnet18": cifar_resnet18,
}


def build_encoder(arch: str, **kwargs: object) -> nn.Module:
    """A randomly initialised encoder: "small_cnn", "cifar_resnet18" or "torchvision:<model name>".

    kwargs go to the constructor (e.g. ``in_channels=3`` for small_cnn). Raises ValueError for an unknown arch.
    """
    if arch.startswith(TORCHVISION_PREFIX):
        return torchvision_encoder(arch[len(TORCHVISION_PREFIX):], **kwargs)
    if arch not in ENCODERS:
        raise ValueError(f"unknown encoder arch {arch!r}; use one of {', '.join(ENCODERS)} or 'torchvision:<name>'")
    return ENCODERS[arch](**kwargs)
