"""Evidence of misalignment for the audited pairs and, out of sample, for the clean reference pairs: what
``influencegate.ecif.combined`` puts on the reference's scale and combines (issue 16, items 3 and 4).

Every piece is oriented so that higher = more misaligned, and comes as (audited pairs (N,), reference (M,)):
- "ecif": -dL'_n, the ECIF misalignment score. A reference pair r is scored as if it were a training pair,
  -s^T grad(Pos_r + Neg_r) in its own reference batch, with s = H^-1 grad L'_half from the other half of the
  reference (two-fold cross-fitting, so that no pair is scored against a loss that holds it).
- "clip": -cosine of the pair under the trained model (the CLIP score, negated).
- "reference_clip": -cosine under a head fitted on clean reference pairs only, which cannot have learned
  the audited pairs' errors: reference pairs under the head of the other half, audited pairs under the mean
  of the two halves' heads. Each head is the same model fitted from the same anchor on its half, with delta
  scaled to the same regularisation per pair (delta x half / N).
- "reference_caption_loss": under the same reference-only heads, the pair's image-to-text loss against the
  captions of the head's own reference half (``caption_losses``): a zero-shot check against clean captions,
  so that a caption the trained model learned consistently (every 3 captioned "eight") still stands out.
- "group": under the same heads, the reference caption loss relative to clean reference pairs with that kind
  of caption, averaged over the pair's group of audited pairs with the same kind of image and of caption
  (``influencegate.ecif.groups``): systematic errors stand out as a group. Reference pairs as above.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from influencegate.ecif.batches import make_batches
from influencegate.ecif.groups import GroupSettings, group_evidence
from influencegate.ecif.influence import loss_gradient, pair_influence
from influencegate.ecif.problem import ContrastiveProblem
from influencegate.ecif.reference import reference_loss
from influencegate.ecif.train import fit_contrastive

#: The names of the evidence ``reference_evidence`` returns.
EVIDENCE = ("ecif", "clip", "reference_clip", "reference_caption_loss", "group")


class InverseHessian(Protocol):
    """b (P,) -> H^-1 b (P,): ``ExactSolver``, ``CGSolver``, or a projected approximation."""

    def solve(self, b: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class FitSettings:
    """How the reference heads are fitted (``fit_contrastive``): batch size of their fixed batches and of
    the reference losses, seed, L-BFGS cap, gradient-norm target, exact-solver size limit; how the group
    evidence is formed."""

    batch_size: int
    seed: int
    max_iter: int
    tol: float
    exact_max_params: int
    groups: GroupSettings = GroupSettings()


def reference_halves(m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of the reference positions 0..m-1 (seeded), sorted; ValueError below 4 pairs
    (each half needs a contrastive batch)."""
    if m < 4:
        raise ValueError(f"cross-fitting on the reference needs at least 4 pairs, got {m}")
    order = np.random.default_rng(seed).permutation(m)
    return np.sort(order[: m // 2]), np.sort(order[m // 2:])


def _cosines(problem: ContrastiveProblem, theta: torch.Tensor, images: torch.Tensor, texts: torch.Tensor) -> np.ndarray:
    """Cosine of each pair's embeddings under the problem's model at theta: (M,)."""
    return problem.model.module_at(theta, torch.float64).pair_cosine(images, texts).detach().numpy()


@torch.no_grad()
def caption_losses(problem: ContrastiveProblem, theta: torch.Tensor, images: torch.Tensor, texts: torch.Tensor,
                   candidates: torch.Tensor) -> np.ndarray:
    """Each pair's image-to-text contrastive loss against candidate captions under the model at theta (M,),
    nats >= 0: -log softmax of its own caption's logit among its own and the distinct candidates' (the
    model's logits, embeddings' dot product / tau). images, texts: M x ..., M x text_dim; candidates:
    C x text_dim (duplicates count once)."""
    module = problem.model.module_at(theta, torch.float64)
    image, own = module.embed_images(images), module.embed_texts(texts)
    own_logit = (image * own).sum(-1) / module.tau
    others = image @ module.embed_texts(torch.unique(candidates, dim=0)).T / module.tau
    return (torch.logsumexp(torch.cat([own_logit[:, None], others], dim=1), dim=1) - own_logit).numpy()


def reference_evidence(problem: ContrastiveProblem, theta: torch.Tensor, solver: InverseHessian,
                       ecif: np.ndarray, images: torch.Tensor, texts: torch.Tensor,
                       settings: FitSettings) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (audited pairs (N,), reference pairs (M,))} for every name in EVIDENCE (module docstring).

    problem, theta, solver: the fitted training objective, its optimum and its damped inverse Hessian.
    ecif: the audited pairs' ECIF misalignment scores (N,) against the whole reference.
    images, texts: the reference pairs as the model takes them (M x ..., M x text_dim, float64).
    """
    m, n = len(images), len(problem.images)
    ecif_ref, head_ref, head_pairs = np.empty(m), np.empty(m), np.zeros(n)
    loss_ref, loss_pairs, group_ref, group_pairs = np.empty(m), np.zeros(n), np.empty(m), np.zeros(n)
    first, second = reference_halves(m, settings.seed)
    for own, other in ((first, second), (second, first)):
        s = solver.solve(loss_gradient(reference_loss(problem.model, images[own], texts[own], settings.batch_size,
                                                      settings.seed), theta))
        scored = ContrastiveProblem(problem.model, images[other], texts[other],
                                    make_batches(len(other), settings.batch_size, settings.seed), problem.delta,
                                    problem.anchor)
        pos, neg = pair_influence(scored, theta, s)
        ecif_ref[other] = -(pos + neg).numpy()
        half = ContrastiveProblem(problem.model, images[own], texts[own],
                                  make_batches(len(own), settings.batch_size, settings.seed),
                                  problem.delta * len(own) / n, problem.anchor)
        head = fit_contrastive(half, problem.anchor, settings.max_iter, settings.tol, settings.exact_max_params,
                               False).theta
        head_ref[other] = -_cosines(problem, head, images[other], texts[other])
        head_pairs -= _cosines(problem, head, problem.images, problem.texts) / 2
        loss_ref[other] = caption_losses(problem, head, images[other], texts[other], texts[own])
        loss_half = caption_losses(problem, head, problem.images, problem.texts, texts[own])
        loss_pairs += loss_half / 2
        grouped = _group(problem, head, images, texts, own, other, np.r_[loss_half, loss_ref[other]], settings.groups)
        group_pairs += grouped[0] / 2
        group_ref[other] = grouped[1]
    clip = (-_cosines(problem, theta, problem.images, problem.texts), -_cosines(problem, theta, images, texts))
    return {"ecif": (np.asarray(ecif, dtype=np.float64), ecif_ref), "clip": clip,
            "reference_clip": (head_pairs, head_ref), "reference_caption_loss": (loss_pairs, loss_ref),
            "group": (group_pairs, group_ref)}


@torch.no_grad()
def _group(problem: ContrastiveProblem, head: torch.Tensor, images: torch.Tensor, texts: torch.Tensor,
           own: np.ndarray, other: np.ndarray, loss: np.ndarray, settings: GroupSettings
           ) -> tuple[np.ndarray, np.ndarray]:
    """``groups.group_evidence`` under one reference head: (audited pairs (N,), reference pairs ``other``).
    loss: the caption losses of the audited pairs then of the ``other`` reference pairs (N + len(other),)."""
    module = problem.model.module_at(head, torch.float64)
    rows_images, rows_texts = torch.cat([problem.images, images[other]]), torch.cat([problem.texts, texts[other]])
    pairs, reference = group_evidence(module.embed_images(rows_images), module.embed_texts(rows_texts),
                                      torch.as_tensor(loss), len(problem.images), module.embed_images(images[own]),
                                      module.embed_texts(texts[own]), module.tau, settings)
    return pairs.numpy(), reference.numpy()
