"""The ratio estimator of Influence-SSL (``InfluenceConfig.estimator = "ratio"``, session 24, issue 15 item 2).

The plain estimator is the mean of K1 scored draws, s_k = g_k^T (H + lambda I)^-1 g_k, each a forward and a backward
pass. The ratio estimator corrects that mean by the objective of the same draws, d_k = 1 - cos(phi(x),
phi(x_hat_k)), which needs a forward pass only, measured over all K draws:

    influence(x) = mean_{k<K1} s_k(x) * mean_{k<K} d_k(x) / mean_{k<K1} d_k(x)

Under common noise, which draws a run gets moves every sample's scores alike; d_k carries most of that luck
(s_k grows about linearly with d_k: the slope of log s_k on log d_k is 1.03-1.24 on seven encoders), so the K - K1
forward-only draws take it out. It is a ratio estimator of the same expectation E[s] (consistent as K1 grows) and
the plain mean when K1 = K. Measured (benchmarks/ratio_estimator.py, results/ratio_estimator.json, with the
control d_k^b at the fitted slope b; d_k itself, b = 1 as here, ranked as well on the four sets tried): at K1 = 16,
K = 64 six SimCLR patch encoders rank alike between perturbation seeds at 0.957-0.992 (the plain mean of 16 draws
0.900-0.985), and a forward-only draw costs 0.04 of a scored one on 32 x 32 patches (0.12 on 8 x 8 digits).
Through the library with the draws pilot (benchmarks/fit_rule_scale.py, two held-out SimCLR encoders, 4,000
patches): 0.982-0.989 between seeds at 0.36-0.37 of the issue-time default's CPU seconds (README, issue 15).
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from influencegate.influence.capture import autocast_context, ssl_distance
from influencegate.influence.perturb import make_perturbation

#: Seed offsets of the two control frames the draws pilot simulates its seeds with (`control_frames`).
CONTROL_SEED_OFFSETS = (1_000_003, 2_000_003)
#: Rows (images x draws) of one forward-only pass, on the CPU and on a GPU. On the CPU larger forwards leave the
#: caches: SmallCNN, 32 x 32 patches, 1,024 images x 64 draws, one thread: 3.1-3.3 CPU s at 64-256 rows, 7.3 at 512,
#: 10.5 at 4,096 (session 24; 4,096 first made the ratio option cost 1.4-1.6x the plain default).
ROWS_PER_PASS = {"cpu": 256, "cuda": 4096}


@torch.no_grad()
def objective_draws(model: nn.Module, perturb: Callable, loader: DataLoader, draws: int, device: torch.device,
                    dtype: torch.dtype, precision: str = "fp32", objective: str = "cosine", desc: str = "control draws",
                    progress: bool = False) -> Iterator[tuple[list[str], np.ndarray]]:
    """(sample ids, d: B x draws float64) of every batch of `loader` (yielding (ids, images B x C x H x W)):
    the objective of draws 0..draws-1, forward only, phi(x) once per batch, up to ROWS_PER_PASS[device type]
    perturbed rows per forward; a progress bar `desc` over the samples with `progress`."""
    bar = tqdm(total=len(loader.dataset), desc=desc, unit="sample", disable=not progress, dynamic_ncols=True)
    for batch_ids, images in loader:
        ids, x = list(batch_ids), images.to(device=device, dtype=dtype)
        with autocast_context(device, precision):
            z = model(x)
        out = np.empty((len(ids), draws))
        chunk = max(1, ROWS_PER_PASS.get(device.type, ROWS_PER_PASS["cpu"]) // max(1, len(ids)))
        for first in range(0, draws, chunk):
            ks = range(first, min(draws, first + chunk))
            x_hat = torch.cat([perturb(x, ids, k).to(device=device, dtype=dtype) for k in ks])
            with autocast_context(device, precision):
                z_hat = model(x_hat)
            d = ssl_distance(z.repeat(len(ks), *([1] * (z.dim() - 1))), z_hat, objective)
            out[:, first:first + len(ks)] = d.double().reshape(len(ks), len(ids)).T.cpu().numpy()
        bar.update(len(ids))
        yield ids, out
    bar.close()


def ratio_factor(objective: np.ndarray, scored: int) -> np.ndarray:
    """mean_{k<K} d_k / mean_{k<scored} d_k per row of `objective` (N x K): the factor that turns the mean of the
    first `scored` draws' scores into the ratio estimate (1 when scored = K)."""
    return objective.mean(axis=1) / np.maximum(objective[:, :scored].mean(axis=1), np.finfo(float).tiny)


def control_frames(spec: str, sigma: float, draws: int, seed: int, noise: str) -> list[Callable]:
    """The two perturbations (K = `draws` draws each, seeds `seed` + CONTROL_SEED_OFFSETS) whose mean objective
    is each simulated seed's control in the draws pilot (``stability.simulated_stability``)."""
    return [make_perturbation(spec, sigma, draws, seed + offset, noise) for offset in CONTROL_SEED_OFFSETS]
