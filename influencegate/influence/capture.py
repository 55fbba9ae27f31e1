"""One streaming pass of the Influence-SSL objective with projected per-sample gradients.

For a batch x (B images) and each draw k, the objective d_k(x) = 1 - cos(phi(x), phi(x_hat_k)) is
differentiated through both forward passes. Weight gradients are never formed: the encoder's parameters
are frozen and only activation gradients flow (from the first tracked layers' outputs, made leaves that
require grad; the images do not), which also saves the weight-gradient half of every backward. A pass stacks [x repeated c times; x_hat for c draws] into one
forward of 2 c B rows and one backward: forward hooks project each tracked layer's input, tensor hooks
project its output gradient and form g~ = sum delta~ a~^T over positions and over the two rows of a
(sample, draw) pair (the layer's two uses; `pair_gradients`). Few large passes beat a per-draw loop on CPU
(kernel and hook overheads) and keep the GPU busy; `influence.pass_memory` sizes them to the memory. A pass
yields its c draws together (the curvature sums and the scores take them in one product).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from influencegate.influence.layers import LayerProjector

Batch = tuple[list[str], range, dict[str, torch.Tensor]]
"""(sample_ids (B), draws ks (c), {layer name: projected gradients c B x r_out x r_in, draw-major: rows
i B .. (i + 1) B - 1 are draw ks[i] of the B samples})."""


def pair_gradients(delta: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """g~ of each (sample, draw) pair, summed over positions and over its two rows (row m of the x-branch
    and row n + m of the x_hat-branch): delta 2n x r_out x L, a 2n x r_in x L -> n x r_out x r_in.

    Either two batched products, one per branch (many positions), or one over both rows' 2L positions
    side by side (few positions: the copy that lines them up costs less than a second product's output);
    the same sums in another order, equal to float rounding."""
    n, r_out, positions, r_in = delta.shape[0] // 2, delta.shape[1], delta.shape[2], a.shape[1]
    if 2 * positions * (r_out + r_in) < r_out * r_in:
        side_by_side = delta.reshape(2, n, r_out, positions).permute(1, 2, 0, 3).reshape(n, r_out, 2 * positions)
        inputs = a.reshape(2, n, r_in, positions).permute(1, 0, 3, 2).reshape(n, 2 * positions, r_in)
        return torch.bmm(side_by_side, inputs)
    return torch.bmm(delta[:n], a[:n].transpose(1, 2)).add_(torch.bmm(delta[n:], a[n:].transpose(1, 2)))


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
    collect_grads: bool = True
    grads: dict[str, torch.Tensor] = field(default_factory=dict)
    factors: dict[str, FactorSums] = field(default_factory=dict)
    #: the x-branch of the current pass holds this many identical copies of the batch (rows [x] * c + x_hat):
    #: their inputs are projected once and repeated, which is exact and saves half the input projections
    x_copies: int = 1
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
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor | None:
            if not torch.is_grad_enabled():
                return None
            # A layer whose input carries no gradient (the first tracked layers: the images do not require
            # grad) starts the graph: its output becomes a leaf. The backward then stops there instead of
            # forming the gradient of the images, which nothing uses (2-3x a first convolution's forward).
            leaf = None if output.requires_grad else output.detach().requires_grad_(True)
            output = output if leaf is None else leaf
            # The forward hook runs inside the caller's autocast (bf16/fp16 forward passes); the projections
            # and sums are statistics and stay in self.dtype, like the backward hook's (autocast is off there).
            with torch.autocast(output.device.type, enabled=False):
                a = self._project_inputs(proj, inputs[0].detach().to(self.dtype))
                if self.collect_factors:
                    sums = self._factor_sums(name, proj, a.device)
                    sums.a_sum += torch.einsum("bil,bjl->ij", a, a).double()
                    sums.a_rows += a.shape[0] * a.shape[2]

            def on_grad(grad: torch.Tensor) -> None:
                delta = proj.project_out(grad.detach().to(self.dtype))
                if self.collect_grads:
                    g = pair_gradients(delta, a)
                    self.grads[name] = self.grads[name] + g if name in self.grads else g
                if self.collect_factors:
                    self.factors[name].s_sum += torch.einsum("bol,bpl->op", delta, delta).double()

            output.register_hook(on_grad)
            return leaf

        return hook

    def _project_inputs(self, proj: LayerProjector, a: torch.Tensor) -> torch.Tensor:
        """a~ of every row; the x-branch rows (the first half, x_copies copies of the batch) projected once."""
        half = a.shape[0] // 2
        if self.x_copies == 1 or half % self.x_copies:
            return proj.project_in(a)
        x_part = proj.project_in(a[: half // self.x_copies])
        return torch.cat([x_part.repeat(self.x_copies, 1, 1), proj.project_in(a[half:])])

    def _factor_sums(self, name: str, proj: LayerProjector, device: torch.device) -> FactorSums:
        if name not in self.factors:
            r_out, r_in = proj.shape
            self.factors[name] = FactorSums(torch.zeros(r_in, r_in, dtype=torch.float64, device=device),
                                            torch.zeros(r_out, r_out, dtype=torch.float64, device=device))
        return self.factors[name]

    def count_draws(self, n: int) -> None:
        """Record n (sample, draw) pairs in every layer's S count (after their backward)."""
        for sums in self.factors.values():
            sums.s_count += n


def frozen_copy(encoder: nn.Module, device: str | torch.device, dtype: torch.dtype) -> nn.Module:
    """An eval-mode copy with frozen parameters and no in-place activations (tensor hooks need the
    layer outputs unmodified). ValueError for a TorchScript module: its layers are ScriptModules, on which
    the forward hooks of ``GradientCapture`` cannot be registered."""
    import copy

    if isinstance(encoder, torch.jit.ScriptModule):
        raise ValueError("Influence-SSL cannot score a TorchScript encoder: its layers are ScriptModules, on which the "
                         "forward hooks that capture per-layer inputs and gradients cannot be registered; pass the eager "
                         "model's weights instead (a save_encoder checkpoint, timm:<name>@<state dict>, ...); TorchScript "
                         "serves frozen uses only (ECIF image features, embeddings for findings)")

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
    """Mixed precision for the forward passes: bf16 or fp16 autocast on CUDA, bf16 autocast on the CPU
    (fp16 runs plain there); fp32/fp64 plain."""
    if precision == "bf16" or (precision == "fp16" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return nullcontext()


def projected_gradient_batches(model: nn.Module, capture: GradientCapture, perturb: Callable,
                               loader: DataLoader, draws: int, device: torch.device, dtype: torch.dtype,
                               precision: str = "fp32", objective: str = "cosine", desc: str = "influence",
                               progress: bool = True, draws_per_pass: int = 1,
                               samples_per_step: int | None = None, first_draw: int = 0) -> Iterator[Batch]:
    """Yield the projected per-sample gradients of every step and draw first_draw <= k < draws, one `Batch`
    per pass, streaming over `loader`.

    The loader yields (sample_ids, images B x C x H x W); each batch is taken `samples_per_step` images at a
    time (None: whole). A pass covers c = draws_per_pass draws of one step of s images: 2 c s rows forward
    and backward (``influence.pass_memory.plan_pass`` sizes c and s). Memory is one pass's graph, flat in N.
    """
    chunk = max(1, min(draws - first_draw, draws_per_pass))
    total = len(loader.dataset) if hasattr(loader.dataset, "__len__") else None
    bar = tqdm(total=total, desc=desc, unit="sample", disable=not progress, dynamic_ncols=True)
    with capture:
        for batch_ids, batch_images in loader:
            step = samples_per_step or batch_images.shape[0]
            for start in range(0, batch_images.shape[0], step):
                ids, images = list(batch_ids[start:start + step]), batch_images[start:start + step]
                yield from _step_passes(model, capture, perturb, ids, images, range(first_draw, draws), chunk,
                                        device, dtype, precision, objective)
                bar.update(len(ids))
    bar.close()


def _step_passes(model: nn.Module, capture: GradientCapture, perturb: Callable, ids: list[str],
                 images: torch.Tensor, draws: range, chunk: int, device: torch.device, dtype: torch.dtype,
                 precision: str, objective: str) -> Iterator[Batch]:
    """The passes of one step (b images): the draws in groups of `chunk`, 2 chunk b rows each."""
    b = images.shape[0]
    x = images.to(device=device, dtype=dtype)
    for first in range(draws.start, draws.stop, chunk):
        ks = range(first, min(draws.stop, first + chunk))
        x_hat = torch.cat([perturb(x, ids, k).to(device=device, dtype=dtype) for k in ks])
        inputs = torch.cat([x.repeat(len(ks), *([1] * (x.dim() - 1))), x_hat])
        capture.grads, capture.x_copies = {}, len(ks)  # before the forward: its hooks read x_copies
        with autocast_context(device, precision):
            z = model(inputs)
        ssl_distance(z[: len(ks) * b], z[len(ks) * b:], objective).sum().backward()
        capture.count_draws(len(ks) * b)
        yield ids, ks, dict(capture.grads)
