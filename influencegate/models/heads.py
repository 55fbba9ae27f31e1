"""Training-only heads around a backbone: the projector/predictor MLPs and the per-method objectives.

Each objective maps (backbone, view1, view2) to a scalar loss and owns every parameter that is not the
backbone's; ``pretrain`` throws the objective away and keeps the backbone.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from influencegate.models.ssl_losses import barlow_twins_loss, byol_loss, simclr_loss

PROJECTION_DIM = 128
BYOL_BASE_MOMENTUM = 0.99


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Linear -> BatchNorm1d -> ReLU -> Linear: B x in_dim -> B x out_dim (the SimCLR/BYOL head)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim)
    )


def hidden_dim_for(feature_dim: int) -> int:
    """Projector width: twice the backbone's feature size, between 256 and 2048."""
    return min(2048, max(256, 2 * feature_dim))


class ProjectedObjective(nn.Module):
    """SimCLR or Barlow Twins: a projector on the backbone's features, then a symmetric two-view loss."""

    def __init__(self, method: str, feature_dim: int) -> None:
        super().__init__()
        self.loss_fn = {"simclr": simclr_loss, "barlow_twins": barlow_twins_loss}[method]
        self.projector = mlp(feature_dim, hidden_dim_for(feature_dim), PROJECTION_DIM)

    def forward(self, backbone: nn.Module, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """Views B x C x H x W -> scalar loss."""
        return self.loss_fn(self.projector(backbone(view1)), self.projector(backbone(view2)))

    def after_step(self, backbone: nn.Module, fraction_done: float) -> None:
        """Nothing to update (only BYOL keeps a target network)."""


class BYOLObjective(nn.Module):
    """BYOL: online projector + predictor regress an EMA target (backbone + projector) of the other view.

    The target momentum rises from 0.99 to 1 along a cosine schedule over training.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__()
        hidden = hidden_dim_for(feature_dim)
        self.projector = mlp(feature_dim, hidden, PROJECTION_DIM)
        self.predictor = mlp(PROJECTION_DIM, hidden, PROJECTION_DIM)
        self.target = nn.Sequential(copy.deepcopy(backbone), copy.deepcopy(self.projector))
        self.target.requires_grad_(False)

    def forward(self, backbone: nn.Module, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """Views B x C x H x W -> symmetric BYOL loss (scalar, in [0, 8])."""
        z1, z2 = self.projector(backbone(view1)), self.projector(backbone(view2))
        with torch.no_grad():
            t1, t2 = self.target(view1), self.target(view2)
        return byol_loss(self.predictor(z1), t2) + byol_loss(self.predictor(z2), t1)

    @torch.no_grad()
    def after_step(self, backbone: nn.Module, fraction_done: float) -> None:
        """Move the target towards the online backbone + projector; fraction_done in [0, 1]."""
        momentum = 1 - (1 - BYOL_BASE_MOMENTUM) * (math.cos(math.pi * fraction_done) + 1) / 2
        online = nn.Sequential(backbone, self.projector)
        for target_p, online_p in zip(self.target.parameters(), online.parameters()):
            target_p.lerp_(online_p, 1 - momentum)
        for target_b, online_b in zip(self.target.buffers(), online.buffers()):
            target_b.copy_(online_b)


METHODS = ("simclr", "byol", "barlow_twins")


def build_objective(method: str, backbone: nn.Module, feature_dim: int) -> ProjectedObjective | BYOLObjective:
    """The training objective for ``method`` (one of METHODS); ValueError otherwise."""
    if method == "byol":
        return BYOLObjective(backbone, feature_dim)
    if method in METHODS:
        return ProjectedObjective(method, feature_dim)
    raise ValueError(f"unknown SSL method {method!r}; use one of {', '.join(METHODS)}")
