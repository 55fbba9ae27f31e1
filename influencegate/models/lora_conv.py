"""LoRA for convolutions: a frozen Conv2d plus a trainable low-rank update, so that LoRA on a CNN image
encoder (SmallCNN's three convolutions) adapts more than its final Linear layer."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LoRAConv2d(nn.Module):
    """y = base(x) + (alpha / rank) * conv1x1(conv_k(x; A); B).

    A (rank x in_channels x kh x kw) is a convolution with the base layer's kernel size, stride, padding and
    dilation into ``rank`` channels, Gaussian with std 1/sqrt(in_channels kh kw);
    B (out_channels x rank x 1 x 1) mixes them back and starts at zero, so the wrapped layer initially
    computes exactly what ``base`` does. The update has rank <= ``rank`` per output position (the conv
    analogue of LoRA's W + B A). Grouped base convolutions are not supported. Input B x C_in x H x W,
    output B x C_out x H' x W' as ``base``.
    """

    def __init__(self, base: nn.Conv2d, rank: int, alpha: float, generator: torch.Generator) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be positive, got {rank}")
        if base.groups != 1 or base.padding_mode != "zeros":
            raise ValueError("LoRAConv2d needs an ungrouped convolution with zero padding")
        self.base = base.requires_grad_(False)
        self.scale = alpha / rank
        kh, kw = base.kernel_size
        fan_in = base.in_channels * kh * kw
        self.lora_a = nn.Parameter(torch.randn(rank, base.in_channels, kh, kw, generator=generator,
                                               dtype=base.weight.dtype) / math.sqrt(fan_in))
        self.lora_b = nn.Parameter(torch.zeros(base.out_channels, rank, 1, 1, dtype=base.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x C_in x H x W -> B x C_out x H' x W'."""
        base = self.base
        low = F.conv2d(x, self.lora_a, None, base.stride, base.padding, base.dilation)
        return base(x) + self.scale * F.conv2d(low, self.lora_b)
