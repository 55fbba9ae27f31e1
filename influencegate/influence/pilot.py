"""The draws pilot's gradients of the fit's draws, kept from the curvature pass instead of computed again.

With `target_stability`, `fit` scores its first PILOT_SAMPLES fitted samples with all K draws under the fitted
curvature (``influence.stability`` then chooses the draws). The curvature pass has already computed their
projected gradients for the fit's draws, but before the curvature they are scored with exists. A `PilotStash`
keeps those rows, so that the pilot's own pass covers only the draws the fit did not take: none under the
default rule (all K draws of the fitted samples, the pilot's first among them), draws fit_draws..K-1 under an
integer fit_draws. The gradients are the same tensors either way; only the order of the floating-point sums
can differ (by rounding).

The stash holds min(n_fit, PILOT_SAMPLES) x fit_draws x sum_l r_out r_in values (SmallCNN, r = 32: 2,632 per
(sample, draw), 345 MB at 64 draws in float32) and is used only when that is at most STASH_BUDGET_FRACTION
of one pass's memory budget (``influence.pass_memory.pass_budget_bytes``); otherwise the pilot passes over all
K draws of its samples. It is bounded by PILOT_SAMPLES, not by N, so memory stays flat in N.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from influencegate.influence.capture import Batch

#: The largest share of a pass's memory budget the stash may take.
STASH_BUDGET_FRACTION = 0.25


def stash_bytes(samples: int, draws: int, shapes: Sequence[tuple[int, int]], dtype: torch.dtype) -> int:
    """Bytes of the projected gradients of `samples` samples x `draws` draws, one r_out x r_in block per layer
    shape in `shapes`, in `dtype`."""
    per_row = sum(math.prod(shape) for shape in shapes)
    return samples * draws * per_row * torch.empty(0, dtype=dtype).element_size()


class PilotStash:
    """Keeps the rows of the first `samples` samples of a streaming pass.

    `add` takes the pass's batches in the order the pass yields them (steps in dataset order; each step's
    draws in order, the first pass of a step starting at draw 0); `records` are what it kept, as `Batch`es.
    """

    def __init__(self, samples: int) -> None:
        if samples < 1:
            raise ValueError(f"a pilot stash needs at least one sample, got {samples}")
        self.samples = samples
        self.records: list[Batch] = []
        self._seen = 0
        self._offset = 0

    def add(self, ids: list[str], ks: range, grads: dict[str, torch.Tensor]) -> None:
        """Keep the pilot's rows of one pass: grads {layer: len(ks) len(ids) x r_out x r_in}, draw-major."""
        if ks.start == 0:  # a new step
            self._offset, self._seen = self._seen, self._seen + len(ids)
        take = max(0, min(len(ids), self.samples - self._offset))
        if take == len(ids):
            self.records.append((ids, ks, grads))
        elif take:
            self.records.append((ids[:take], ks, {
                name: g.reshape(len(ks), len(ids), *g.shape[1:])[:, :take].reshape(len(ks) * take, *g.shape[1:])
                for name, g in grads.items()}))
