"""Exact Influence-SSL for small models: full per-sample gradients (torch.func) and the exact damped Fisher.

This is the independent reference the approximations are measured against. It shares with the scorer only
the definition of the objective and of the perturbed images (same seeds), not the gradient machinery.
"""
from __future__ import annotations

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
from influencegate.influence.scorer import sample_loader
from influencegate.influence.table import scores_table


def per_sample_gradients(encoder: nn.Module, dataset: Dataset, config: InfluenceConfig
                         ) -> tuple[list[str], torch.Tensor, dict[str, slice]]:
    """Full weight gradients of d(x, x_hat_k) for every (sample, draw).

    Returns (sample_ids N, G of shape N x K x P in float64 on CPU, {layer: slice of the P columns}).
    P = total weight count of the tracked layers (biases excluded). Memory N x K x P: small models only.
    """
    model = frozen_copy(encoder, "cpu", config.dtype)
    layers = tracked_layers(model)
    names = [f"{n}.weight" for n in layers]
    perturb = make_perturbation(config.perturbation, config.sigma, config.draws, config.seed, config.noise)

    def objective(weights: dict[str, torch.Tensor], x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        z = functional_call(model, weights, (x.unsqueeze(0),))
        z_hat = functional_call(model, weights, (x_hat.unsqueeze(0),))
        return ssl_distance(z, z_hat)[0]

    per_sample = vmap(grad(objective), in_dims=(None, 0, 0))
    weights = {n: model.get_parameter(n).detach() for n in names}
    ids: list[str] = []
    rows = []
    for batch_ids, images in tqdm(sample_loader(dataset, config.batch_size), desc="exact", disable=not config.progress):
        batch_ids = list(batch_ids)
        x = images.to(config.dtype)
        draws = []
        for k in range(config.draws):
            g = per_sample(weights, x, perturb(x, batch_ids, k).to(config.dtype))
            draws.append(torch.cat([g[n].reshape(len(batch_ids), -1) for n in names], dim=1))
        rows.append(torch.stack(draws, dim=1).double())
        ids.extend(batch_ids)
    slices, start = {}, 0
    for layer, n in zip(layers, names):
        size = weights[n].numel()
        slices[layer] = slice(start, start + size)
        start += size
    return ids, torch.cat(rows), slices


def damped_quadratic_scores(g: torch.Tensor, damping: torch.Tensor) -> torch.Tensor:
    """g_m^T (H + diag(damping))^-1 g_m for every row m of g (M x P), H = g^T g / M; float64.

    Uses the P x P system when P <= M, else the Woodbury identity through the M x M kernel
    (diag(damping) must be positive).
    """
    m, p = g.shape
    if p <= m:
        h = g.T @ g / m + torch.diag(damping)
        return (g * torch.linalg.solve(h, g.T).T).sum(1)
    g_scaled = g / damping
    kernel = g_scaled @ g.T  # G D^-1 G^T
    correction = torch.linalg.solve(m * torch.eye(m, dtype=g.dtype) + kernel, kernel)
    return torch.diagonal(kernel) - (kernel * correction.T).sum(1)


def exact_self_influence(encoder: nn.Module, dataset: Dataset, config: InfluenceConfig | None = None,
                         block_diagonal: bool = True, gradients: tuple | None = None) -> pd.DataFrame:
    """Exact influence(x) = (1/K) sum_k g_k^T (H + Lambda)^-1 g_k with full per-sample gradients.

    H = (1/(N K)) sum_(n,k) g_nk g_nk^T over all tracked weights. `block_diagonal=True` keeps only the
    per-layer blocks of H (what every scalable approximation does); False uses the full H.
    Lambda: `config.damping` times I when set (absolute, same meaning as in the scorer), else per layer
    0.1 x the mean eigenvalue (trace / size) of that layer's block, on that block's diagonal.
    `gradients`: a precomputed `per_sample_gradients(...)` result, to compare several settings cheaply.
    Returns the scores table (same columns as `InfluenceScorer.score`).
    """
    config = config or InfluenceConfig()
    ids, g, slices = gradients or per_sample_gradients(encoder, dataset, config)
    n, k, p = g.shape
    flat = g.reshape(n * k, p)
    damping = torch.empty(p, dtype=torch.float64)
    for block in slices.values():
        cols = flat[:, block]
        mean_eig = cols.pow(2).sum().item() / (n * k) / cols.shape[1]
        damping[block] = HEURISTIC_DAMPING * mean_eig if config.damping is None else config.damping
    if block_diagonal:
        scores = sum(damped_quadratic_scores(flat[:, b], damping[b]) for b in slices.values())
    else:
        scores = damped_quadratic_scores(flat, damping)
    influence = scores.reshape(n, k).mean(1).numpy()
    return scores_table(ids, influence, getattr(dataset, "records", None))


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation of two equally long score vectors."""
    ra = pd.Series(np.asarray(a)).rank().to_numpy()
    rb = pd.Series(np.asarray(b)).rank().to_numpy()
    return float(np.corrcoef(ra, rb)[0, 1])
