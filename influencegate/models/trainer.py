"""``pretrain``: a small, fully seeded self-supervised trainer for an encoder on an ImageDataset."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from influencegate.data.dataset import ImageDataset
from influencegate.models.augment import AugmentConfig, augment, default_augment_config
from influencegate.models.heads import build_objective


@dataclass
class PretrainResult:
    """What ``pretrain`` returns.

    encoder: the trained backbone alone (no projector), in eval mode, on CPU.
    losses: mean training loss of each epoch, in the method's units (nats for SimCLR).
    method: "simclr", "byol" or "barlow_twins".
    seconds: wall-clock training time.
    """

    encoder: nn.Module
    losses: list[float] = field(default_factory=list)
    method: str = "simclr"
    seconds: float = 0.0


def feature_dim(encoder: nn.Module, image_shape: tuple[int, int, int], device: str | torch.device) -> int:
    """Size D of the encoder's output for one C x H x W image (one eval-mode forward of 2 blank images)."""
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        out = encoder(torch.zeros(2, *image_shape, device=device))
    encoder.train(was_training)
    if out.ndim != 2:
        raise ValueError(f"the encoder must output B x D features, got shape {tuple(out.shape)}")
    return int(out.shape[1])


def pretrain(
    encoder: nn.Module,
    dataset: ImageDataset,
    method: str = "simclr",
    epochs: int = 20,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    augment_config: AugmentConfig | None = None,
) -> PretrainResult:
    """Self-supervised training of a copy of ``encoder`` on ``dataset``'s images (the input is not modified).

    method: "simclr" (NT-Xent, temperature 0.2), "byol" (EMA target, momentum 0.99 -> 1) or "barlow_twins".
    A projector MLP (and BYOL's predictor and target) is added for training and discarded afterwards.
    Each epoch visits floor(N / batch_size) random batches (at least one; the remainder is skipped, a different
    one each epoch) with two augmented views per image (``default_augment_config(dataset.image_shape)``
    unless augment_config is given). Optimiser: Adam(lr).
    Seeded: head initialisation, batch order and augmentations all derive from ``seed`` (the global RNG is
    restored afterwards), so two CPU runs with equal inputs give identical weights.
    """
    if len(dataset) < 2:
        raise ValueError(f"pretrain needs at least 2 readable samples, {dataset.name!r} has {len(dataset)}")
    start = time.perf_counter()
    config = augment_config or default_augment_config(dataset.image_shape)
    backbone = copy.deepcopy(encoder).to(device).train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        objective = build_objective(method, backbone, feature_dim(backbone, dataset.image_shape, device)).to(device)
    objective.train()
    params = list(backbone.parameters()) + [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    n = len(dataset)
    batch_size = min(batch_size, n)
    steps_per_epoch = max(1, n // batch_size)
    total_steps = epochs * steps_per_epoch
    losses: list[float] = []
    bar = tqdm(range(epochs), desc=f"pretrain {method}", unit="epoch", disable=not progress)
    for epoch in bar:
        order = torch.randperm(n, generator=generator)
        epoch_loss = 0.0
        for step in range(steps_per_epoch):
            batch = dataset.batch(order[step * batch_size:(step + 1) * batch_size]).to(device)
            loss = objective(backbone, augment(batch, config, generator), augment(batch, config, generator))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{method} loss became {loss.item()} at epoch {epoch}; try a lower lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            objective.after_step(backbone, (epoch * steps_per_epoch + step + 1) / total_steps)
            epoch_loss += loss.item()
        losses.append(epoch_loss / steps_per_epoch)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return PretrainResult(
        encoder=backbone.eval().cpu(), losses=losses, method=method, seconds=time.perf_counter() - start
    )
