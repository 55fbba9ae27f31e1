"""Exact Influence-SSL for small models: full per-sample gradients (torch.func) and the exact damped Fisher.

This is the independent reference the approximations are measured against. It shares with the scorer only
the definition of the objective and of the perturbed images (same seeds), not the gradient machinery.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from influencegate.influence.capture import frozen_copy, ssl_distance
from influencegate.influence.config import InfluenceConfig
from influencegate.influence.curvature import HEURISTIC_DAMPING
from influencegate.influence.layers import tracked_layers
from influencegate.influence.perturb import make_perturbation
from influencegate.influence.ranking import rank_correlation
from influencegate.influence.loading import sample_loader
from influencegate.influence.table import scores_table


#: Rows of g solved at once by `damped_quadratic_scores` (4,096 x 6,856 float64 = 225 MB on the small CNN).
ROW_CHUNK = 4096


@dataclass
class ExactGradients:
    """Full per-sample gradients of the objective, the reference all approximations are measured against.

    sample_ids: N ids; g: N x K x P float64 (P = weight count of the tracked layers, biases excluded);
    blocks: {layer: slice of the P columns}; hessian: P x P Hessian of the mean objective, when asked for.
    """

    sample_ids: list[str]
    g: torch.Tensor
    blocks: dict[str, slice]
    hessian: torch.Tensor | None = None


def per_sample_gradients(encoder: nn.Module, dataset: Dataset, config: InfluenceConfig,
                         layers: Sequence[str] | None = None, with_hessian: bool = False) -> ExactGradients:
    """Full weight gradients of d(x, x_hat_k) for every (sample, draw), and optionally the exact Hessian
    of the mean objective (1/(N K)) sum d over the same weights. Memory N x K x P (+ P x P): small models only.
    """
    model = frozen_copy(encoder, "cpu", config.dtype)
    tracked = tracked_layers(model)
    missing = sorted(set(layers or []) - set(tracked))
    if missing:
        raise ValueError(f"unknown layer(s) {missing}; tracked layers are {list(tracked)}")
    names = [f"{n}.weight" for n in tracked if layers is None or n in layers]
    perturb = make_perturbation(config.perturbation, config.sigma, config.draws, config.seed, config.noise)
    weights = {n: model.get_parameter(n).detach() for n in names}

    def objective(w: dict[str, torch.Tensor], x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        z = functional_call(model, w, (x,))
        return ssl_distance(z, functional_call(model, w, (x_hat,)), config.objective)

    per_sample = vmap(grad(lambda w, x, xh: objective(w, x[None], xh[None])[0]), in_dims=(None, 0, 0))
    sizes = [weights[n].numel() for n in names]
    offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    ids: list[str] = []
    pairs = []
    rows = torch.empty(len(dataset), config.draws, offsets[-1], dtype=torch.float64)  # filled in place: no copy
    for batch_ids, images in tqdm(sample_loader(dataset, config.batch_size), desc="exact", disable=not config.progress):
        batch_ids = list(batch_ids)
        x = images.to(config.dtype)
        for k in range(config.draws):
            x_hat = perturb(x, batch_ids, k).to(config.dtype)
            g = per_sample(weights, x, x_hat)
            rows[len(ids):len(ids) + len(batch_ids), k] = torch.cat([g[n].reshape(len(batch_ids), -1) for n in names],
                                                                   dim=1)
            if with_hessian:
                pairs.append((x, x_hat))
        ids.extend(batch_ids)
    blocks = {n[: -len(".weight")]: slice(offsets[i], offsets[i + 1]) for i, n in enumerate(names)}
    hessian = None
    if with_hessian:
        def mean_objective(flat: torch.Tensor) -> torch.Tensor:
            w = {n: flat[offsets[i]:offsets[i + 1]].reshape(weights[n].shape) for i, n in enumerate(names)}
            return sum(objective(w, x, xh).sum() for x, xh in pairs) / (len(ids) * config.draws)

        flat = torch.cat([weights[n].reshape(-1) for n in names])
        hessian = torch.func.hessian(mean_objective)(flat).double()
    return ExactGradients(ids, rows[: len(ids)], blocks, hessian)


def damped_quadratic_scores(g: torch.Tensor, damping: torch.Tensor) -> torch.Tensor:
    """g_m^T (H + diag(damping))^-1 g_m for every row m of g (M x P), H = g^T g / M; float64.

    Uses the P x P system when P <= M (one Cholesky factor, solved ROW_CHUNK rows at a time so that memory
    stays near g's own), else the Woodbury identity through the M x M kernel (diag(damping) must be positive).
    """
    m, p = g.shape
    if p <= m:
        factor = torch.linalg.cholesky(g.T @ g / m + torch.diag(damping))
        return torch.cat([(rows * torch.cholesky_solve(rows.T, factor).T).sum(1) for rows in g.split(ROW_CHUNK)])
    g_scaled = g / damping
    kernel = g_scaled @ g.T  # G D^-1 G^T
    correction = torch.linalg.solve(m * torch.eye(m, dtype=g.dtype) + kernel, kernel)
    return torch.diagonal(kernel) - (kernel * correction.T).sum(1)


def exact_self_influence(encoder: nn.Module, dataset: Dataset, config: InfluenceConfig | None = None,
                         block_diagonal: bool = True, curvature: str = "fisher",
                         layers: Sequence[str] | None = None,
                         gradients: ExactGradients | None = None) -> pd.DataFrame:
    """Exact influence(x) = (1/K) sum_k g_k^T (H + Lambda)^-1 g_k with full per-sample gradients.

    curvature="fisher": H = (1/(N K)) sum_(n,k) g_nk g_nk^T (the empirical Fisher the scorer approximates);
    "hessian": H = the exact Hessian of the mean objective (the paper's Theorem 1 setting).
    `block_diagonal=True` keeps only the per-layer blocks of H (what every scalable approximation does);
    False uses the full H. Lambda: `config.damping` times I when set (absolute, same meaning as in the
    scorer), else per layer 0.1 x the mean eigenvalue (trace / size) of that layer's block, on its diagonal.
    `layers`: restrict to these tracked layers. `gradients`: a precomputed `per_sample_gradients(...)`
    result, to compare several settings cheaply. Returns the scores table (columns of `InfluenceScorer.score`).
    """
    if curvature not in ("fisher", "hessian"):
        raise ValueError(f"curvature must be 'fisher' or 'hessian', got {curvature!r}")
    config = config or InfluenceConfig()
    ex = gradients or per_sample_gradients(encoder, dataset, config, layers, with_hessian=curvature == "hessian")
    n, k, p = ex.g.shape
    flat = ex.g.reshape(n * k, p)
    if curvature == "hessian" and ex.hessian is None:
        raise ValueError("these gradients carry no Hessian: compute them with with_hessian=True")
    h = ex.hessian if curvature == "hessian" else None
    damping = torch.empty(p, dtype=torch.float64)
    squares = None if h is not None else sum(rows.pow(2).sum(0) for rows in flat.split(ROW_CHUNK))  # P, by chunks
    for block in ex.blocks.values():
        trace = (torch.diagonal(h)[block].sum().item() if h is not None
                 else squares[block].sum().item() / (n * k))
        damping[block] = HEURISTIC_DAMPING * trace / (block.stop - block.start) if config.damping is None else config.damping
    blocks = list(ex.blocks.values()) if block_diagonal else [slice(0, p)]
    if h is None:
        scores = sum(damped_quadratic_scores(flat[:, b], damping[b]) for b in blocks)
    else:
        scores = sum((flat[:, b] * torch.linalg.solve(h[b, b] + torch.diag(damping[b]), flat[:, b].T).T).sum(1)
                     for b in blocks)
    influence = scores.reshape(n, k).mean(1).numpy()
    return scores_table(ex.sample_ids, influence, getattr(dataset, "records", None))


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation of two equally long score vectors (NaN if either holds a NaN or is constant)."""
    return float(rank_correlation(np.asarray(a, dtype=float), np.asarray(b, dtype=float)))
