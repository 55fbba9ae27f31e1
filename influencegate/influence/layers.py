"""Tracked layers and their LoGra-style projections.

A tracked layer is a Linear or (ungrouped) Conv2d module; its weight gradient for one sample is
G = sum_t delta_t a_t^T over positions t (and over both forward passes of the objective), with a_t the
layer input (an unfolded patch for Conv2d) and delta_t the gradient at the layer output. We never form G:
both sides are projected first, a~ = P_in a (r_in) and delta~ = P_out delta (r_out), and the projected
gradient is g~ = sum_t delta~_t a~_t^T, an r_out x r_in matrix per sample.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


def tracked_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Linear and Conv2d modules (groups == 1) of `model` by qualified name, in module order.

    Grouped/depthwise convolutions are not tracked (their weight gradient factorises per group);
    biases are never tracked, as in LoGra.
    """
    layers = {name: m for name, m in model.named_modules()
              if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)}
    if not layers:
        raise ValueError("the encoder has no Linear or Conv2d layer to track")
    return layers


def layer_sizes(module: nn.Module) -> tuple[int, int]:
    """(d_out, d_in) of the layer's weight gradient matrix (d_in includes the kernel for Conv2d)."""
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    kh, kw = module.kernel_size
    return module.out_channels, module.in_channels * kh * kw


def projected_shape(module: nn.Module, rank: int, identity: bool = False) -> tuple[int, int]:
    """(r_out, r_in) of the layer's projected gradient: each side min(rank, its size), or its size unprojected."""
    d_out, d_in = layer_sizes(module)
    return (d_out, d_in) if identity else (min(rank, d_out), min(rank, d_in))


def _seeded_gaussian(rows: int, cols: int, seed: int, name: str, side: str) -> torch.Tensor:
    digest = hashlib.blake2b(f"{seed}\x1f{name}\x1f{side}".encode(), digest_size=8).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    return torch.randn(rows, cols, generator=gen, dtype=torch.float64) / rows ** 0.5


@dataclass
class LayerProjector:
    """Projection matrices of one layer: p_in r_in x d_in and p_out r_out x d_out; None means identity."""

    module: nn.Module
    p_in: torch.Tensor | None
    p_out: torch.Tensor | None

    @property
    def shape(self) -> tuple[int, int]:
        """(r_out, r_in): the shape of the projected gradient g~."""
        d_out, d_in = layer_sizes(self.module)
        return (d_out if self.p_out is None else self.p_out.shape[0],
                d_in if self.p_in is None else self.p_in.shape[0])

    def to(self, device: torch.device | str, dtype: torch.dtype) -> "LayerProjector":
        move = lambda p: None if p is None else p.to(device=device, dtype=dtype)  # noqa: E731
        return LayerProjector(self.module, move(self.p_in), move(self.p_out))

    def project_in(self, a: torch.Tensor) -> torch.Tensor:
        """Layer input (B x ... x d_in for Linear, B x C x H x W for Conv2d) -> a~, B x r_in x L positions."""
        m = self.module
        if isinstance(m, nn.Linear):
            a = a.reshape(a.shape[0], -1, a.shape[-1])
            a = a if self.p_in is None else a @ self.p_in.T
            return a.transpose(1, 2)
        # a convolution with P_in as kernel = P_in applied to every unfolded patch; with an identity kernel it
        # is the unfold itself, and much faster than F.unfold (im2col) on CPU
        p_in = self.p_in if self.p_in is not None else torch.eye(m.in_channels * m.kernel_size[0] * m.kernel_size[1],
                                                                  device=a.device, dtype=a.dtype)
        kernel = p_in.reshape(-1, m.in_channels, *m.kernel_size)
        out = F.conv2d(a, kernel, stride=m.stride, padding=m.padding, dilation=m.dilation)
        return out.flatten(2)

    def project_out(self, delta: torch.Tensor) -> torch.Tensor:
        """Output gradient (B x ... x d_out for Linear, B x C x H x W for Conv2d) -> delta~, B x r_out x L."""
        if isinstance(self.module, nn.Linear):
            delta = delta.reshape(delta.shape[0], -1, delta.shape[-1]).transpose(1, 2)
        else:
            delta = delta.flatten(2)
        return delta if self.p_out is None else torch.einsum("ro,bol->brl", self.p_out, delta)


def random_projectors(layers: dict[str, nn.Module], rank: int, seed: int,
                      identity: bool = False) -> dict[str, LayerProjector]:
    """Seeded Gaussian projections (entries N(0, 1/r)); a side whose size is <= rank stays exact (identity)."""
    out = {}
    for name, m in layers.items():
        d_out, d_in = layer_sizes(m)
        p_in = None if identity or d_in <= rank else _seeded_gaussian(rank, d_in, seed, name, "in")
        p_out = None if identity or d_out <= rank else _seeded_gaussian(rank, d_out, seed, name, "out")
        out[name] = LayerProjector(m, p_in, p_out)
    return out


def pca_projectors(layers: dict[str, nn.Module], rank: int, covariances: dict[str, tuple[torch.Tensor, torch.Tensor]]
                   ) -> dict[str, LayerProjector]:
    """Projections onto the top-`rank` eigenvectors of each layer's (input, output-gradient) covariances."""
    out = {}
    for name, m in layers.items():
        cov_in, cov_out = covariances[name]
        d_out, d_in = layer_sizes(m)
        top = lambda c, k: torch.linalg.eigh(c.double())[1].flip(-1)[:, :k].T  # noqa: E731
        out[name] = LayerProjector(m, None if d_in <= rank else top(cov_in, rank),
                                   None if d_out <= rank else top(cov_out, rank))
    return out
