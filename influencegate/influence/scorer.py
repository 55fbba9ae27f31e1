"""InfluenceScorer: Influence-SSL self-influence of every sample, LoGra-style, streaming over the data."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Protocol, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from influencegate.influence.capture import GradientCapture, autocast_context, frozen_copy, projected_gradient_batches
from influencegate.influence.pass_memory import PassPlan, activation_bytes_per_row, pass_budget_bytes, plan_pass
from influencegate.influence.config import InfluenceConfig
from influencegate.influence.curvature import CURVATURE_CLASSES, LayerCurvature, RawCurvature
from influencegate.influence.layers import (LayerProjector, pca_projectors, projected_shape, random_projectors,
                                            tracked_layers)
from influencegate.influence.perturb import make_perturbation
from influencegate.influence.table import scores_table


def resolve_device(name: str) -> torch.device:
    """torch.device for `name`, with a clear error when CUDA is asked for but absent."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine; use --device cpu")
    return device


def sample_loader(dataset: Dataset, batch_size: int) -> DataLoader:
    """Batches of (sample_ids, images) in dataset order; the dataset yields (sample_id, image C x H x W)."""
    if len(dataset) == 0:
        raise ValueError("the dataset has no readable sample to score")
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


class Reducer(Protocol):
    """Combines what several processes fitted on disjoint parts of the samples (torch.distributed ranks;
    ``influence.distributed.ProcessGroupReducer``). Every process gets the same result."""

    def total(self, count: int) -> int:
        """The sum of every process's count."""

    def merged(self, parts: dict[str, Any]) -> dict[str, Any]:
        """Every process's {layer: mergeable sums} (FactorSums, LayerCurvature), merged in process order."""


class InfluenceScorer:
    """Influence-SSL: influence(x) = (1/K) sum_k g_k^T (H + lambda I)^-1 g_k, g_k = grad d(x, x_hat_k).

    encoder: any nn.Module mapping B x C x H x W to B x D (or B x ... flattened); it is copied, put in eval
    mode and frozen. layers: qualified names of the tracked Linear/Conv2d layers (default: all of them).
    Use: `scorer.fit(dataset)` (the curvature; one streaming pass, two for ekfac, one more for pca
    projections), then `scorer.score(dataset)` -> the scores table.
    """

    def __init__(self, encoder: nn.Module, config: InfluenceConfig | None = None,
                 layers: Sequence[str] | None = None) -> None:
        self.config = config or InfluenceConfig()
        cfg = self.config
        self.device = resolve_device(cfg.device)
        self.model = frozen_copy(encoder, self.device, cfg.dtype)
        all_layers = tracked_layers(self.model)
        missing = sorted(set(layers or []) - set(all_layers))
        if missing:
            raise ValueError(f"unknown layer(s) {missing}; tracked layers are {list(all_layers)}")
        self.layers = {n: m for n, m in all_layers.items() if layers is None or n in layers}
        self.perturb = make_perturbation(cfg.perturbation, cfg.sigma, cfg.draws, cfg.seed, cfg.noise)
        self.projectors: dict[str, LayerProjector] = {}
        self.curvature: dict[str, LayerCurvature] = {}
        self._plans: dict[tuple[int, ...], PassPlan] = {}

    # -- passes -----------------------------------------------------------------------------------------
    def _pass(self, dataset: Dataset, projectors: dict[str, LayerProjector], desc: str,
              collect_factors: bool = False, collect_grads: bool = True, draws: int | None = None):
        """(capture, iterator over (ids, draw, grads)) of one streaming pass over the first `draws` draws
        (None: all K)."""
        cfg = self.config
        stat_dtype = torch.float64 if cfg.precision == "fp64" else torch.float32
        capture = GradientCapture({n: p.to(self.device, stat_dtype) for n, p in projectors.items()},
                                  dtype=stat_dtype, collect_factors=collect_factors, collect_grads=collect_grads)
        plan = self.pass_plan(dataset)
        batches = projected_gradient_batches(self.model, capture, self.perturb, sample_loader(dataset, cfg.batch_size),
                                             draws or cfg.draws, self.device, cfg.dtype, cfg.precision, cfg.objective, desc,
                                             cfg.progress, plan.draws_per_pass, plan.samples_per_step)
        return capture, batches

    def pass_plan(self, dataset: Dataset) -> PassPlan:
        """How many images and draws one pass holds (``influence.pass_memory``), probed on the dataset's first
        image once per image shape."""
        cfg = self.config
        _, image = dataset[0]
        shape = tuple(image.shape)
        if shape not in self._plans:
            example = image.unsqueeze(0).to(self.device, cfg.dtype)
            per_row = activation_bytes_per_row(self.model, example, autocast_context(self.device, cfg.precision))
            self._plans[shape] = plan_pass(per_row, pass_budget_bytes(self.device), cfg.batch_size, cfg.draws,
                                           cfg.draws_per_pass)
        return self._plans[shape]

    def _factor_sums(self, dataset: Dataset, projectors: dict[str, LayerProjector], desc: str,
                     reducer: Reducer | None) -> dict[str, Any]:
        """The Kronecker-factor sums of one pass over the first `fit_draws` draws (of every process)."""
        capture, batches = self._pass(dataset, projectors, desc, collect_factors=True, collect_grads=False,
                                      draws=self.fit_draws)
        for _ in batches:
            pass
        return reducer.merged(capture.factors) if reducer else capture.factors

    def _fit_projectors(self, dataset: Dataset, reducer: Reducer | None) -> dict[str, LayerProjector]:
        cfg = self.config
        if cfg.projection != "pca":
            return random_projectors(self.layers, cfg.rank, cfg.projection_seed, identity=cfg.projection == "identity")
        exact = random_projectors(self.layers, cfg.rank, cfg.projection_seed, identity=True)
        factors = self._factor_sums(dataset, exact, "pca projections", reducer)
        covariances = {n: (f.a_sum / max(f.a_rows, 1.0), f.s_sum / max(f.s_count, 1.0)) for n, f in factors.items()}
        return pca_projectors(self.layers, cfg.rank, covariances)

    def fit(self, dataset: Dataset, reducer: Reducer | None = None) -> "InfluenceScorer":
        """Fit projections and per-layer curvature on `dataset` (streaming; memory flat in N).

        reducer: when several processes each fit on their own part of the samples, combines their sums after
        every pass, so that each ends with the fit of all the samples (see ``influence.distributed``).
        """
        cfg = self.config
        dimension = max(math.prod(projected_shape(m, cfg.rank, cfg.projection == "identity"))
                        for m in self.layers.values())
        n_samples = reducer.total(len(dataset)) if reducer else len(dataset)
        self.fit_draws = cfg.curvature_draws(n_samples, dimension)
        self.projectors = self._fit_projectors(dataset, reducer)
        curvature_class = CURVATURE_CLASSES[cfg.curvature]
        options = {"inverse_rank": cfg.inverse_rank} if curvature_class is RawCurvature else {}
        self.curvature = {n: curvature_class(p.shape, **options) for n, p in self.projectors.items()}
        if curvature_class.needs_factors:
            factors = self._factor_sums(dataset, self.projectors, "curvature factors", reducer)
            for name, curv in self.curvature.items():
                curv.set_factors(factors[name])
        if curvature_class.needs_gradients:
            _, batches = self._pass(dataset, self.projectors, "curvature", draws=self.fit_draws)
            for ids, _, grads in batches:
                for name, curv in self.curvature.items():
                    curv.update(self._layer_grad(grads, name, len(ids)))
            if reducer:
                self.curvature = reducer.merged(self.curvature)
        for curv in self.curvature.values():
            curv.finalize(cfg.damping)
        return self

    def _layer_grad(self, grads: dict[str, torch.Tensor], name: str, batch: int) -> torch.Tensor:
        """The layer's projected gradients, zeros when the objective does not reach the layer."""
        if name in grads:
            return grads[name]
        return torch.zeros(batch, *self.projectors[name].shape, device=self.device)

    def influence(self, dataset: Dataset) -> tuple[list[str], np.ndarray]:
        """(sample_ids, influence N, float64) in dataset order; `fit` must have run."""
        if not self.curvature:
            raise RuntimeError("call fit(dataset) before score(dataset)")
        draws = self.config.draws
        totals: dict[str, float] = defaultdict(float)
        order: list[str] = []
        _, batches = self._pass(dataset, self.projectors, "score")
        for ids, k, grads in batches:
            per_sample = sum(curv.score(self._layer_grad(grads, name, len(ids))).cpu()
                             for name, curv in self.curvature.items())
            if k == 0:
                order.extend(ids)
            for sid, value in zip(ids, per_sample.tolist()):
                totals[sid] += value / draws
        return order, np.array([totals[s] for s in order])

    def score(self, dataset: Dataset) -> pd.DataFrame:
        """The scores table (docs/design.md section 2): every record of the dataset, failed ones with `error`."""
        ids, influence = self.influence(dataset)
        return scores_table(ids, influence, getattr(dataset, "records", None))

    def embeddings(self, dataset: Dataset) -> np.ndarray:
        """Encoder outputs of the readable samples, N x D float32, in dataset order."""
        return encode(self.model, dataset, self.config.batch_size, self.device, self.config.dtype)


@torch.no_grad()
def encode(model: nn.Module, dataset: Dataset, batch_size: int = 256, device: str | torch.device = "cpu",
           dtype: torch.dtype = torch.float32) -> np.ndarray:
    """`model` outputs (flattened) of the dataset's readable samples, N x D float32, in dataset order; the
    model must already sit on `device` in eval mode."""
    chunks = [model(images.to(device, dtype)).flatten(1).float().cpu()
              for _, images in sample_loader(dataset, batch_size)]
    return torch.cat(chunks).numpy()
