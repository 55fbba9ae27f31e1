"""How many rows one forward/backward pass may hold, from the encoder's activation size and free memory.

A pass of the engine stacks 2 c B rows (the batch's B images repeated for c draws, and their c perturbed
copies) into one forward and one backward (``capture.projected_gradient_batches``). Its memory is the autograd
graph: about the activations of every row. A fixed row count is wrong at both ends: 4096 rows of 8 x 8 digits
take megabytes, 4096 rows of 224 x 224 images through a ResNet-50 take hundreds of GiB (measured on an H200:
the default configuration ran out of its 140 GiB at the first pass). So the rows per pass come from a probe:
one forward of one image, summing the bytes of every leaf module's output, against a budget (half the free GPU memory on CUDA, a quarter of the available RAM on the CPU). When even one draw of
a whole batch exceeds the budget, the batch is scored in smaller steps; results do not depend on either
choice (the perturbation is seeded per sample id and draw).

The sum of leaf outputs over-counts what a pass keeps (not every BatchNorm or ReLU output is saved for the
backward), which is the safety margin: CIFAR ResNet-18 at 32 px, 8.3 MiB per row by the probe, 4.6 MiB per
row measured at the peak of a 4096-row pass on an H200 (19.0 GiB); ResNet-50 at 224 px, 123 MiB by the probe.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn as nn

MAX_ROWS_PER_PASS = 4096
"""Upper bound on rows per pass (2 x 8 draws x 256 samples): beyond it passes gain nothing measurable."""
CUDA_FREE_FRACTION = 0.5
CPU_AVAILABLE_FRACTION = 0.25
CPU_FALLBACK_BYTES = 4 * 2**30


@dataclass(frozen=True)
class PassPlan:
    """samples_per_step: images of a batch taken together (<= the batch size); draws_per_pass: draws stacked
    into one pass; bytes_per_row: the probe's estimate; budget_bytes: what a pass may use."""

    samples_per_step: int
    draws_per_pass: int
    bytes_per_row: int
    budget_bytes: int


def activation_bytes_per_row(model: nn.Module, image: torch.Tensor, precision_context) -> int:
    """Bytes of every leaf module's output for one image (1 x C x H x W, on the model's device and dtype),
    run under `precision_context` (the autocast of the passes), plus the image itself."""
    total = image.numel() * image.element_size()

    def count(module: nn.Module, inputs: tuple, output: object) -> None:
        nonlocal total
        for tensor in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad(), precision_context:
            model(image)
    finally:
        for handle in handles:
            handle.remove()
    return int(total)


def available_ram_bytes() -> int:
    """RAM the system can give without swapping: MemAvailable of /proc/meminfo on Linux (free memory plus the
    reclaimable page cache; plain free memory is small on a machine that has read many images), else the
    free pages, else CPU_FALLBACK_BYTES."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return CPU_FALLBACK_BYTES


def pass_budget_bytes(device: torch.device) -> int:
    """Bytes one pass may use: half the free memory of the CUDA device, a quarter of the available RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FREE_FRACTION)
    return int(available_ram_bytes() * CPU_AVAILABLE_FRACTION)


def plan_pass(bytes_per_row: int, budget_bytes: int, batch_size: int, draws: int,
              draws_per_pass: int | None = None) -> PassPlan:
    """The largest pass within the budget: c draws of the whole batch (2 c B rows, c <= draws) when one draw
    fits, else one draw of s < B samples per step (2 s rows). An explicit draws_per_pass is kept as given."""
    rows = max(2, min(MAX_ROWS_PER_PASS, budget_bytes // max(1, bytes_per_row)))
    if draws_per_pass is not None:
        return PassPlan(batch_size, max(1, min(draws, draws_per_pass)), bytes_per_row, budget_bytes)
    if rows >= 2 * batch_size:
        return PassPlan(batch_size, max(1, min(draws, rows // (2 * batch_size))), bytes_per_row, budget_bytes)
    return PassPlan(max(1, rows // 2), 1, bytes_per_row, budget_bytes)
