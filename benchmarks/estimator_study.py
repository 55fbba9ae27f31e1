"""Per-draw study of the Influence-SSL estimator (issue 15, item 2): what a cheaper estimator of the same
expectation E_k[g_k^T (H + lambda)^-1 g_k] can reach.

For each encoder, the curvature is fitted once (default configuration) and then, for two perturbation seeds,
every sample's per-draw score s_k(x) = g_k^T (H + lambda)^-1 g_k (K_MAX draws) and the per-draw objective
d_k(x) = 1 - cos(phi(x), phi(x + sigma eps_k)) (a forward-only statistic of the same draw) are recorded.
Estimators are then compared offline on those numbers: stability = Spearman between the two seeds' estimates,
cost in units of one forward+backward draw (a forward-only draw counts FORWARD_SHARE).

Encoders: SimCLR SmallCNN on the digits (tuning), BYOL SmallCNN on the digits with another seed, and SimCLR
SmallCNN on natural-image patches (scikit-image photos, 32 x 32 RGB) (both held out).
Usage: python benchmarks/estimator_study.py [--epochs 20] [--k-max 64] [--out estimator_study.npz]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from influencegate import InfluenceConfig, InfluenceScorer
from influencegate.influence.capture import ssl_distance

RESULTS = Path(__file__).parent / "results"


def per_draw_records(scorer: InfluenceScorer, dataset, seed: int, k_max: int,
                     seconds: dict[str, float] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, scores N x K, objective N x K) for perturbation seed `seed` with the scorer's fitted curvature;
    `seconds`, when given, gets the CPU seconds of the scored draws ("scores") and of the forward-only ones
    ("objective")."""
    from dataclasses import replace

    from influencegate.influence.perturb import make_perturbation

    cfg = replace(scorer.config, seed=seed, draws=k_max)
    scorer.config = cfg
    scorer.perturb = make_perturbation(cfg.perturbation, cfg.sigma, cfg.draws, cfg.seed, cfg.noise)
    rows: dict[str, np.ndarray] = {}
    objective: dict[str, np.ndarray] = {}
    order: list[str] = []
    start = time.process_time()
    for ids, k, values in scorer._draw_scores(dataset, k_max, f"seed {seed}"):
        if k == 0:
            order.extend(ids)
            for sid in ids:
                rows[sid], objective[sid] = np.zeros(k_max), np.zeros(k_max)
        for sid, value in zip(ids, values):
            rows[sid][k] = value
    scored = time.process_time()
    with torch.no_grad():
        for first in range(0, len(dataset), 256):
            ids = order[first:first + 256]
            x = torch.stack([dataset[i][1] for i in range(first, min(first + 256, len(dataset)))])
            z = scorer.model(x)
            for k in range(k_max):
                d = ssl_distance(z, scorer.model(scorer.perturb(x, ids, k)), cfg.objective)
                for sid, value in zip(ids, d.tolist()):
                    objective[sid][k] = value
    if seconds is not None:
        seconds.update(scores=scored - start, objective=time.process_time() - scored)
    return order, np.stack([rows[s] for s in order]), np.stack([objective[s] for s in order])


def natural_patches(n: int, size: int = 32, seed: int = 0, source: str = "skimage"):
    """n random size x size RGB patches of scikit-image's photographs (source "skimage": astronaut, coffee,
    chelsea, rocket, immunohistochemistry) or of scikit-learn's two sample images ("sklearn": china,
    flower), as an ImageDataset."""
    from skimage import data as skdata
    from sklearn.datasets import load_sample_images

    from influencegate.data import ImageDataset

    photos = (list(load_sample_images().images) if source == "sklearn" else
              [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket(), skdata.immunohistochemistry()])
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        y, x = rng.integers(0, photo.shape[0] - size), rng.integers(0, photo.shape[1] - size)
        out.append(photo[y:y + size, x:x + size, :3])
    images = torch.tensor(np.stack(out), dtype=torch.float32).permute(0, 3, 1, 2) / 255.0
    images = (images - images.mean(dim=(0, 2, 3), keepdim=True)) / images.std(dim=(0, 2, 3), keepdim=True)
    return ImageDataset.from_tensors(images, [f"patch{i:05d}" for i in range(n)])


def main() -> None:
    from influencegate.data import load_images
    from influencegate.models import build_encoder, pretrain

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--k-max", type=int, default=64)
    p.add_argument("--n-patches", type=int, default=1500)
    p.add_argument("--out", default="estimator_study.npz")
    args = p.parse_args()
    torch.set_num_threads(2)
    digits = load_images("digits")
    settings = {
        "digits_simclr_s0": (digits, "simclr", 0),
        "digits_byol_s1": (digits, "byol", 1),
        "patches_simclr_s2": (natural_patches(args.n_patches), "simclr", 2),
    }
    arrays: dict[str, np.ndarray] = {}
    for name, (data, method, seed) in settings.items():
        start = time.perf_counter()
        initial = build_encoder("small_cnn", seed=seed, in_channels=data.images.shape[1])
        encoder = pretrain(initial, data, method=method, epochs=args.epochs, seed=seed, progress=False).encoder
        scorer = InfluenceScorer(encoder, InfluenceConfig(progress=False)).fit(data)
        for noise_seed in (0, 1):
            _, scores, objective = per_draw_records(scorer, data, noise_seed, args.k_max)
            arrays[f"{name}/seed{noise_seed}/scores"] = scores
            arrays[f"{name}/seed{noise_seed}/objective"] = objective
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
    RESULTS.mkdir(exist_ok=True)
    np.savez_compressed(RESULTS / args.out, **arrays)


if __name__ == "__main__":
    main()
