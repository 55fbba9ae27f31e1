"""SmallCNN: a ~7k-parameter image encoder small enough for exact per-sample-gradient Fisher matrices."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class SmallCNN(nn.Module):
    """conv3x3 -> ReLU -> conv3x3/2 -> ReLU -> conv3x3/2 -> ReLU -> global average pool -> Linear.

    No normalisation layers, so each sample's embedding depends on that sample only (also in train mode).
    With the defaults and 1 input channel it has 6,944 parameters. Works on any input size >= 1 pixel
    (8 x 8 digits, 32 x 32 CIFAR...).

    Input: float32 B x in_channels x H x W (normalised). Output: B x embed_dim.
    """

    def __init__(self, in_channels: int = 1, widths: Sequence[int] = (8, 16, 32), embed_dim: int = 32) -> None:
        super().__init__()
        if len(widths) != 3:
            raise ValueError(f"widths needs 3 channel counts, got {tuple(widths)}")
        w1, w2, w3 = (int(w) for w in widths)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w1, kernel_size=3, stride=1, padding=1),
            nn.ReLU(),
            nn.Conv2d(w1, w2, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(w2, w3, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(w3, embed_dim)
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x C x H x W -> B x embed_dim."""
        return self.head(self.features(x))
