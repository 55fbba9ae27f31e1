"""InfluenceScorer: Influence-SSL self-influence of every sample, LoGra-style, streaming over the data."""
from __future__ import annotations

import math
from collections import defaultdict
from itertools import chain
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import Dataset, Subset

from influencegate.influence.capture import (Batch, GradientCapture, autocast_context, frozen_copy,
                                             projected_gradient_batches)
from influencegate.influence.pass_memory import PassPlan, activation_bytes_per_row, pass_budget_bytes, plan_pass
from influencegate.influence.config import InfluenceConfig
from influencegate.influence.control import control_frames, objective_draws, ratio_factor
from influencegate.influence.curvature import CURVATURE_CLASSES, LayerCurvature, RawCurvature
from influencegate.influence.fit_samples import fitted_subset, share_count
from influencegate.influence.layers import (LayerProjector, pca_projectors, projected_shape, random_projectors,
                                            tracked_layers)
from influencegate.influence.perturb import make_perturbation
from influencegate.influence.pilot import STASH_BUDGET_FRACTION, PilotStash, stash_bytes
from influencegate.influence.loading import NO_SAMPLES, encode, resolve_device, sample_loader
from influencegate.influence.stability import PILOT_SAMPLES, candidate_draws, choose_draws
from influencegate.influence.table import scores_table


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
        #: draws each score averages (config.draws unless target_stability chose fewer in `fit`), the pilot's
        #: expected between-seed stability per candidate draw count and the PAIR_QUANTILE of its simulated seed
        #: pairs (the choice's criterion; ``influence.stability``), and the pilot's per-draw scores by sample id
        self.score_draws: int = cfg.draws
        self.draw_predictions: dict[int, float] = {}
        self.draw_quantiles: dict[int, float] = {}
        self._pilot: dict[str, np.ndarray] = {}
        #: the ratio estimator's pilot objective d_k of every draw, by sample id (``influence.control``)
        self._pilot_objective: dict[str, np.ndarray] = {}

    # -- passes -----------------------------------------------------------------------------------------
    def _pass(self, dataset: Dataset, projectors: dict[str, LayerProjector], desc: str,
              collect_factors: bool = False, collect_grads: bool = True, draws: int | None = None,
              first_draw: int = 0):
        """(capture, iterator over `capture.Batch`es (ids, draws, grads), one per pass) of one streaming pass
        over draws first_draw <= k < `draws` (None: all K)."""
        cfg = self.config
        capture = GradientCapture({n: p.to(self.device, self._stat_dtype) for n, p in projectors.items()},
                                  dtype=self._stat_dtype, collect_factors=collect_factors, collect_grads=collect_grads)
        plan = self.pass_plan(dataset)
        batches = projected_gradient_batches(self.model, capture, self.perturb, sample_loader(dataset, cfg.batch_size),
                                             draws or cfg.draws, self.device, cfg.dtype, cfg.precision, cfg.objective, desc,
                                             cfg.progress, plan.draws_per_pass, plan.samples_per_step, first_draw)
        return capture, batches

    @property
    def _stat_dtype(self) -> torch.dtype:
        """Dtype of the projected gradients and their statistics (float64 only under fp64)."""
        return torch.float64 if self.config.precision == "fp64" else torch.float32

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
        """Fit projections and per-layer curvature on `dataset` (streaming; memory flat in N): on all K draws of
        its evenly spread share of samples by default, or on the first fit_draws draws of every sample
        (``InfluenceConfig.fit_draws``, ``influence.fit_samples``); the draws pilot scores the first fitted ones.

        reducer: when several processes each fit on their own part of the samples, combines their sums after
        every pass, so that each ends with the fit of all the samples (see ``influence.distributed``).
        """
        cfg = self.config
        dimension = max(math.prod(projected_shape(m, cfg.rank, cfg.projection == "identity"))
                        for m in self.layers.values())
        # The pilot is one process's first fitted samples; under several processes (reducer) every rank keeps all
        # K draws, so that the ranks score alike.
        pilot = cfg.target_stability is not None and len(candidate_draws(cfg.draws)) > 1 and reducer is None
        n_samples = reducer.total(len(dataset)) if reducer else len(dataset)
        self.fit_draws = cfg.curvature_draws()
        if not n_samples:
            raise ValueError(NO_SAMPLES)
        self.fit_share = cfg.curvature_samples(n_samples, dimension, PILOT_SAMPLES if pilot else 0) / n_samples
        fit_data = fitted_subset(dataset, share_count(self.fit_share, len(dataset)))
        self.projectors = self._fit_projectors(fit_data, reducer)
        curvature_class = CURVATURE_CLASSES[cfg.curvature]
        options = {"inverse_rank": cfg.inverse_rank} if curvature_class is RawCurvature else {}
        self.curvature = {n: curvature_class(p.shape, **options) for n, p in self.projectors.items()}
        if curvature_class.needs_factors:
            factors = self._factor_sums(fit_data, self.projectors, "curvature factors", reducer)
            for name, curv in self.curvature.items():
                curv.set_factors(factors[name])
        stash = self._pilot_stash(len(fit_data)) if pilot and curvature_class.needs_gradients else None
        if curvature_class.needs_gradients:
            self._update_curvature(fit_data, "curvature", stash)
            if reducer:
                self.curvature = reducer.merged(self.curvature)
        for curv in self.curvature.values():
            curv.finalize(cfg.damping)
        self.score_draws, self.draw_predictions, self.draw_quantiles, self._pilot = cfg.draws, {}, {}, {}
        self._pilot_objective = {}
        if pilot:
            self._choose_score_draws(fit_data, stash)
        return self

    def _update_curvature(self, dataset: Dataset, desc: str, stash: PilotStash | None = None) -> None:
        """Add the projected gradients of the first fit_draws draws of `dataset` to every layer's curvature
        sums, a whole pass (c draws x B samples) per update; `stash` keeps the pilot's rows."""
        _, batches = self._pass(dataset, self.projectors, desc, draws=self.fit_draws)
        for ids, ks, grads in batches:
            grads = {name: self._layer_grad(grads, name, len(ks) * len(ids)) for name in self.curvature}
            for name, curv in self.curvature.items():
                curv.update(grads[name])
            if stash is not None:
                stash.add(ids, ks, grads)

    def _pilot_stash(self, samples: int) -> PilotStash | None:
        """A stash for the pilot's fit-draw gradients (``influence.pilot``), None when it would take more than
        STASH_BUDGET_FRACTION of a pass's memory budget."""
        pilot = min(samples, PILOT_SAMPLES)
        shapes = [p.shape for p in self.projectors.values()]
        budget = STASH_BUDGET_FRACTION * pass_budget_bytes(self.device)
        return PilotStash(pilot) if stash_bytes(pilot, self.fit_draws, shapes, self._stat_dtype) <= budget else None

    def extend_fit(self, dataset: Dataset) -> "InfluenceScorer":
        """Add `dataset`'s samples to a fitted scorer's curvature (same projections, fit_draws, share of fitted
        samples and score draws: the fitted share of `dataset`, spread over it, ``influence.fit_samples``; the
        sums and counts grow) and refresh its damped inverse: the fit of the union of the samples fitted so far
        and these, without a pass over the former. Identity, diagonal and raw curvature only
        (K-FAC and EK-FAC keep eigenbases of their factors, which do not add up); ValueError for those."""
        cfg = self.config
        if not self.curvature:
            raise RuntimeError("extend_fit needs a fitted scorer (fit, or restore_fit of a saved fit)")
        if CURVATURE_CLASSES[cfg.curvature].needs_factors:
            raise ValueError(f"a {cfg.curvature!r} fit cannot be extended with new samples (its factor eigenbases "
                             "do not add up); use curvature 'raw', 'diagonal' or 'identity', or fit again")
        if CURVATURE_CLASSES[cfg.curvature].needs_gradients:
            self._update_curvature(fitted_subset(dataset, share_count(self.fit_share, len(dataset))),
                                   "curvature (new samples)")
        for curv in self.curvature.values():
            curv.finalize(cfg.damping)
        self._pilot = {}  # its per-draw scores were made under the previous curvature
        return self

    def _choose_score_draws(self, dataset: Dataset, stash: PilotStash | None) -> None:
        """Score the first PILOT_SAMPLES of `dataset` (the fitted samples) with all K draws and keep the fewest
        draws whose predicted between-seed stability reaches config.target_stability (``influence.stability``).
        The pilot's per-draw scores are kept, so its samples are not scored again. With a `stash` (the pilot's
        gradients of the first fit_draws draws, from the curvature pass) only the other draws are computed."""
        pilot = Subset(dataset, range(min(len(dataset), PILOT_SAMPLES)))
        first = self.fit_draws if stash is not None else 0
        rest = self._draw_scores(pilot, self.config.draws, "draws pilot", first) if first < self.config.draws else ()
        rows: dict[str, np.ndarray] = {}
        for ids, k, values in chain(self._batch_scores(stash.records if stash else ()), rest):
            for sid, value in zip(ids, values):
                rows.setdefault(sid, np.zeros(self.config.draws))[k] = value
        self._pilot = rows
        per_draw, objective, controls = np.stack(list(rows.values())), None, None
        if self.config.estimator == "ratio":
            objective, controls = self._pilot_controls(pilot, list(rows))
        self.score_draws, self.draw_predictions, self.draw_quantiles = choose_draws(
            per_draw, self.config.target_stability, objective, controls)

    def _objective_batches(self, dataset: Dataset, perturb: Callable,
                           desc: str) -> Iterator[tuple[list[str], np.ndarray]]:
        """(sample ids, d: B x K) of every batch of `dataset` for the K draws of `perturb`, forward only
        (``control.objective_draws``)."""
        cfg = self.config
        return objective_draws(self.model, perturb, sample_loader(dataset, cfg.batch_size), cfg.draws, self.device,
                               cfg.dtype, cfg.precision, cfg.objective, desc, cfg.progress)

    def _pilot_controls(self, pilot: Dataset, order: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(the pilot's objective of its K draws, N x K; two control means, N x 2, each over a frame of K draws of
        its own seed: what each of two simulated seeds measures besides its scored draws), kept for its scores."""
        cfg = self.config
        frames = [self.perturb, *control_frames(cfg.perturbation, cfg.sigma, cfg.draws, cfg.seed, cfg.noise)]
        by_frame = [{sid: row for ids, d in self._objective_batches(pilot, frame, "pilot control draws")
                     for sid, row in zip(ids, d)} for frame in frames]
        self._pilot_objective = by_frame[0]
        return (np.stack([by_frame[0][sid] for sid in order]),
                np.stack([[frame[sid].mean() for frame in by_frame[1:]] for sid in order]))

    def _layer_grad(self, grads: dict[str, torch.Tensor], name: str, batch: int) -> torch.Tensor:
        """The layer's projected gradients, zeros when the objective does not reach the layer."""
        if name in grads:
            return grads[name]
        return torch.zeros(batch, *self.projectors[name].shape, device=self.device)

    def _draw_scores(self, dataset: Dataset, draws: int, desc: str,
                     first_draw: int = 0) -> Iterator[tuple[list[str], int, list[float]]]:
        """(sample ids, draw k, g_k^T (H + lambda)^-1 g_k of each sample) for every step and draw
        first_draw <= k < draws."""
        _, batches = self._pass(dataset, self.projectors, desc, draws=draws, first_draw=first_draw)
        return self._batch_scores(batches)

    def _batch_scores(self, batches: Iterable[Batch]) -> Iterator[tuple[list[str], int, list[float]]]:
        """(sample ids, draw k, per-sample score) of every draw of `capture.Batch`es, scored a pass at a time."""
        for ids, ks, grads in batches:
            rows = len(ks) * len(ids)
            per_row = sum(curv.score(self._layer_grad(grads, name, rows)).cpu() for name, curv in self.curvature.items())
            for k, values in zip(ks, per_row.reshape(len(ks), len(ids)).tolist()):
                yield ids, k, values

    def influence(self, dataset: Dataset) -> tuple[list[str], np.ndarray]:
        """(sample_ids, influence N, float64) in dataset order: the mean over the first `score_draws` draws
        (config.draws, or fewer when target_stability chose them in `fit`), with estimator "ratio" times
        ``control.ratio_factor`` of all draws' objective; `fit` must have run."""
        if not self.curvature:
            raise RuntimeError("call fit(dataset) before score(dataset)")
        draws = self.score_draws
        ratio = self.config.estimator == "ratio" and draws < self.config.draws
        known = getattr(dataset, "sample_ids", None) if self._pilot else None
        cached = {sid: float(self._pilot[sid][:draws].mean()) for sid in known or () if sid in self._pilot}
        if ratio:
            cached = {sid: value * float(ratio_factor(self._pilot_objective[sid][None], draws)[0])
                      for sid, value in cached.items()}
        rest = Subset(dataset, [i for i, sid in enumerate(known) if sid not in cached]) if cached else dataset
        totals: dict[str, float] = defaultdict(float)
        order: list[str] = []
        if len(rest):
            for ids, k, values in self._draw_scores(rest, draws, "score"):
                if k == 0:
                    order.extend(ids)
                for sid, value in zip(ids, values):
                    totals[sid] += value / draws
            if ratio:
                for ids, objective in self._objective_batches(rest, self.perturb, "control draws"):
                    for sid, factor in zip(ids, ratio_factor(objective, draws).tolist()):
                        totals[sid] *= factor
        if cached:
            totals.update(cached)
            order = list(known)
        return order, np.array([totals[s] for s in order])

    def score(self, dataset: Dataset) -> pd.DataFrame:
        """The scores table (docs/design.md section 2): every record of the dataset, failed ones with `error`."""
        ids, influence = self.influence(dataset)
        return scores_table(ids, influence, getattr(dataset, "records", None))

    def embeddings(self, dataset: Dataset) -> np.ndarray:
        """Encoder outputs of the readable samples, N x D float32, in dataset order."""
        return encode(self.model, dataset, self.config.batch_size, self.device, self.config.dtype)
