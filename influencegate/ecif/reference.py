"""Reference losses L'(theta) whose change ECIF predicts: a clean reference set, or one mispredicted query."""
from __future__ import annotations

from collections.abc import Callable

import torch

from influencegate.ecif.batches import make_batches
from influencegate.ecif.contrastive import batch_loss
from influencegate.ecif.problem import FlatDual

Loss = Callable[[torch.Tensor], torch.Tensor]


def reference_loss(model: FlatDual, images: torch.Tensor, texts: torch.Tensor, batch_size: int, seed: int) -> Loss:
    """L'(theta) = (1/M) sum_b L_b over M clean reference pairs in their own fixed batches (seeded):
    the mean symmetric InfoNCE loss per reference pair, nats. images: M x ... (float64), texts: M x text_dim."""
    if len(images) != len(texts):
        raise ValueError(f"reference set: {len(images)} image rows for {len(texts)} text rows")
    if len(images) < 2:
        raise ValueError(f"a reference set needs at least 2 pairs (in-batch negatives), got {len(images)}")
    batches = make_batches(len(images), batch_size, seed)

    def loss(theta: torch.Tensor) -> torch.Tensor:
        return sum(batch_loss(model.similarity(theta, images[g], texts[g])) for g in batches.groups()) / len(images)

    return loss


def query_loss(model: FlatDual, image: torch.Tensor, candidate_texts: torch.Tensor, target: int) -> Loss:
    """L'(theta) = -log softmax over the K candidate texts of S(candidate, image) at ``target``: the
    cross-entropy of one query image (1 x ..., float64) against K x text_dim candidate text features, nats.
    A mispredicted query has a large value; ECIF then finds the training pairs behind it."""
    if image.shape[0] != 1:
        raise ValueError(f"query image must be a batch of one (1 x ...), got shape {tuple(image.shape)}")
    if not 0 <= target < len(candidate_texts):
        raise ValueError(f"target {target} is not one of the {len(candidate_texts)} candidates")
    if len(candidate_texts) < 2:
        raise ValueError("a query needs at least 2 candidate captions")

    def loss(theta: torch.Tensor) -> torch.Tensor:
        return -torch.log_softmax(model.similarity(theta, image, candidate_texts)[:, 0], dim=0)[target]

    return loss
