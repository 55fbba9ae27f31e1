"""Self-supervised objectives on two views' embeddings. All inputs are B x D; all losses are scalars."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def simclr_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """NT-Xent (SimCLR): cross-entropy of each of the 2B embeddings picking its other view among the 2B - 1 others.

    Embeddings are L2-normalised; logits are cosine similarities / temperature (2B x 2B, self-pairs excluded).
    Returns the mean over the 2B anchors (nats).
    """
    batch = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * batch, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)]).to(z.device)
    return F.cross_entropy(logits, targets)


def byol_loss(p1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """BYOL regression loss 2 - 2 cos(p1, z2), mean over the batch; the target z2 is detached. Range [0, 4]."""
    return (2 - 2 * F.cosine_similarity(p1, z2.detach(), dim=1)).mean()


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3, eps: float = 1e-5) -> torch.Tensor:
    """Barlow Twins: sum_i (1 - C_ii)^2 + lambd sum_{i != j} C_ij^2, C = z1~^T z2~ / B the D x D cross-correlation
    of the views standardised over the batch (biased variance, as BatchNorm without affine; eps added to it).
    """
    def standardise(z: torch.Tensor) -> torch.Tensor:
        return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)

    c = standardise(z1).T @ standardise(z2) / z1.shape[0]
    on_diagonal = (1 - torch.diagonal(c)).pow(2).sum()
    off_diagonal = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on_diagonal + lambd * off_diagonal
