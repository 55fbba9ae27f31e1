"""One streaming pass of the Influence-SSL objective with projected per-sample gradients.

For a batch x (B images) and each draw k, the objective d_k(x) = 1 - cos(phi(x), phi(x_hat_k)) is
differentiated through both forward passes. Weight gradients are never formed: the encoder's parameters
are frozen and only activation gradients flow (the input carries requires_grad), which also saves the
weight-gradient half of every backward. Forward hooks project each tracked layer's input once, tensor
hooks project its output gradient and add delta~ a~^T to a per-layer buffer, summed over positions and over
the layer's two uses. The x-branch is run once per batch and its graph kept for the K draws.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from influencegate.influence.layers import LayerProjector

Batch = tuple[list[str], int, dict[str, torch.Tensor]]
"""(sample_ids, draw index k, {layer name: projected gradients B x r_out x r_in})."""


@dataclass
class FactorSums:
    """Kronecker-factor sums of one layer, mergeable across shards (sums + counts).

    a_sum: r_in x r_in, sum over rows (sample, draw, use, position) of a~ a~^T; a_rows counts those rows.
    s_sum: r_out x r_out, sum over (sample, draw) of sum_(use, position) delta~ delta~^T; s_count counts
    the (sample, draw) pairs. KFAC: E[vec g~ vec g~^T] ~ S (x) A with A = a_sum / a_rows, S = s_sum / s_count.
    """

    a_sum: torch.Tensor
    s_sum: torch.Tensor
    a_rows: float = 0.0
    s_count: float = 0.0

    def merge(self, other: "FactorSums") -> None:
        self.a_sum += other.a_sum
        self.s_sum += other.s_sum
        self.a_rows += other.a_rows
        self.s_count += other.s_count


@dataclass
class GradientCapture:
    """Forward/tensor hooks on the tracked layers; collects projected gradients (and optionally factors)."""

    projectors: dict[str, LayerProjector]
    dtype: torch.dtype = torch.float32
    collect_factors: bool = False
    grads: dict[str, torch.Tensor] = field(default_factory=dict)
    factors: dict[str, FactorSums] = field(default_factory=dict)
    forward_weight: float = 1.0
    _handles: list = field(default_factory=list)

    def __enter__(self) -> "GradientCapture":
        for name, proj in self.projectors.items():
            self._handles.append(proj.module.register_forward_hook(self._forward_hook(name, proj)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _forward_hook(self, name: str, proj: LayerProjector) -> Callable:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if not output.requires_grad:
                return
            a = proj.project_in(inputs[0].detach().to(self.dtype))
            weight = self.forward_weight
            if self.collect_factors:
                sums = self._factor_sums(name, proj)
                sums.a_sum += weight * torch.einsum("bil,bjl->ij", a, a).double()
                sums.a_rows += weight * a.shape[0] * a.shape[2]

            def on_grad(grad: torch.Tensor) -> None:
                delta = proj.project_out(grad.detach().to(self.dtype))
                g = torch.einsum("bol,bil->boi", delta, a)
                self.grads[name] = self.grads[name] + g if name in self.grads else g
                if self.collect_factors:
                    self.factors[name].s_sum += torch.einsum("bol,bpl->op", delta, delta).double()

            output.register_hook(on_grad)

        return hook

    def _factor_sums(self, name: str, proj: LayerProjector) -> FactorSums:
        if name not in self.factors:
            r_out, r_in = proj.shape
            self.factors[name] = FactorSums(torch.zeros(r_in, r_in, dtype=torch.float64),
                                            torch.zeros(r_out, r_out, dtype=torch.float64))
        return self.factors[name]

    def count_draws(self, n: int) -> None:
        """Record n (sample, draw) pairs in every layer's S count (after their backward)."""
        for sums in self.factors.values():
            sums.s_count += n


def frozen_copy(encoder: nn.Module, device: str | torch.device, dtype: torch.dtype) -> nn.Module:
    """An eval-mode copy with frozen parameters and no in-place activations (tensor hooks need the
    layer outputs unmodified)."""
    import copy

    model = copy.deepcopy(encoder).to(device=device, dtype=dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    for m in model.modules():
        if getattr(m, "inplace", False) is True:
            m.inplace = False
    return model


def ssl_distance(z: torch.Tensor, z_hat: torch.Tensor, objective: str = "cosine") -> torch.Tensor:
    """Per-row objective, z and z_hat B x D (flattened) -> B: 1 - cos(z, z_hat), or |z - z_hat|^2 for
    "euclidean". Computed in at least float32 (float64 stays float64)."""
    z, z_hat = z.flatten(1), z_hat.flatten(1)
    if z.dtype != torch.float64:
        z, z_hat = z.float(), z_hat.float()
    if objective == "euclidean":
        return (z - z_hat).pow(2).sum(1)
    return 1.0 - F.cosine_similarity(z, z_hat, dim=1)


def autocast_context(device: torch.device, precision: str):
    """Mixed precision for the forward passes on CUDA (bf16/fp16); plain elsewhere."""
    if device.type == "cuda" and precision in ("bf16", "fp16"):
        return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return nullcontext()


def projected_gradient_batches(model: nn.Module, capture: GradientCapture, perturb: Callable,
                               loader: DataLoader, draws: int, device: torch.device, dtype: torch.dtype,
                               precision: str = "fp32", objective: str = "cosine", desc: str = "influence",
                               progress: bool = True) -> Iterator[Batch]:
    """Yield the projected per-sample gradients of every (batch, draw), streaming over `loader`.

    The loader yields (sample_ids, images B x C x H x W). Memory is one batch's graph, flat in N.
    """
    total = len(loader.dataset) if hasattr(loader.dataset, "__len__") else None
    bar = tqdm(total=total, desc=desc, unit="sample", disable=not progress, dynamic_ncols=True)
    with capture:
        for ids, images in loader:
            ids = list(ids)
            x = images.to(device=device, dtype=dtype).requires_grad_(True)
            capture.forward_weight = float(draws)
            with autocast_context(device, precision):
                z = model(x)
            capture.forward_weight = 1.0
            for k in range(draws):
                x_hat = perturb(x.detach(), ids, k).to(device=device, dtype=dtype).requires_grad_(True)
                with autocast_context(device, precision):
                    z_hat = model(x_hat)
                capture.grads = {}
                ssl_distance(z, z_hat, objective).sum().backward(retain_graph=k < draws - 1)
                capture.count_draws(len(ids))
                yield ids, k, capture.grads
            bar.update(len(ids))
    bar.close()
