"""The training objective R(theta) of a dual encoder on fixed batches, as a function of one flat vector.

theta (P,) float64 holds the trainable parameters of a DualEncoder (heads, LoRA adapters) in
``named_parameters`` order; everything else is frozen. Calls go through ``torch.func.functional_call``, so
gradients, Hessian-vector products and Jacobian-vector products with respect to theta are all available.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import functional_call, grad

from influencegate.ecif.batches import FixedBatches
from influencegate.ecif.contrastive import batch_loss, negative_exact, negative_part, positive_part
from influencegate.models.dual import DualEncoder, similarity_matrix


class FlatDual:
    """A float64 copy of a DualEncoder whose trainable parameters are addressed as one flat vector."""

    def __init__(self, dual: DualEncoder) -> None:
        self.module = copy.deepcopy(dual).to(torch.float64).eval()
        trainable = [(n, p) for n, p in self.module.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in trainable]
        self.shapes = [p.shape for _, p in trainable]
        self.sizes = [p.numel() for _, p in trainable]

    @property
    def n_params(self) -> int:
        """P, the number of trainable parameters."""
        return sum(self.sizes)

    @property
    def texts_depend_on_theta(self) -> bool:
        """Whether any trainable parameter acts on the text side (a trainable text head)."""
        return any(n.startswith("text_head.") for n in self.names)

    def flatten(self) -> torch.Tensor:
        """The module's current trainable parameters as theta (P,), float64, detached."""
        params = dict(self.module.named_parameters())
        return torch.cat([params[n].detach().reshape(-1) for n in self.names])

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """theta (P,) -> {parameter name: tensor of its shape} (views into theta, gradients flow)."""
        if theta.shape != (self.n_params,):
            raise ValueError(f"theta must have shape ({self.n_params},), got {tuple(theta.shape)}")
        return {n: t.reshape(s) for n, s, t in zip(self.names, self.shapes, torch.split(theta, self.sizes))}

    def embed(self, theta: torch.Tensor, images: torch.Tensor | None = None,
              texts: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(image embeddings B_i x embed_dim, text embeddings B_t x embed_dim) at theta; None where no input."""
        return functional_call(self.module, self.unflatten(theta), (images, texts))

    def similarity(self, theta: torch.Tensor, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        """S = u v^T / tau at theta for texts (... x B_t x text_dim) against images (... x B_i x item shape):
        ... x B_t x B_i; leading dimensions index batches (embedded in one call)."""
        lead = texts.ndim - 1  # batch dimensions, pairs included
        v, u = self.embed(theta, images.reshape(-1, *images.shape[lead:]), texts.reshape(-1, texts.shape[-1]))
        return similarity_matrix(u.reshape(*texts.shape[:lead], -1), v.reshape(*images.shape[:lead], -1), self.module.tau)

    def module_at(self, theta: torch.Tensor, dtype: torch.dtype = torch.float32) -> DualEncoder:
        """A standalone DualEncoder (eval mode, ``dtype``) carrying theta."""
        module = copy.deepcopy(self.module)
        with torch.no_grad():
            for name, value in self.unflatten(theta.detach()).items():
                module.get_parameter(name).copy_(value)
        return module.to(dtype).eval()


@dataclass
class ContrastiveProblem:
    """R(theta) = sum_b L_b(S_b(theta)) + (delta / 2) |theta - anchor|^2 over fixed batches.

    model: the flat view of the dual encoder. images: N x ... (features or images, float64), texts:
    N x text_dim (float64), row n = pair position n. batches: the fixed batches over those positions.
    delta: L2 coefficient (per unit of |theta - anchor|^2; the data term is a sum over pairs, not a mean).
    anchor: (P,) the point the L2 term pulls towards; default 0, which is docs/design.md section 4's
    (delta/2)|theta|^2. With normalised embeddings the data term is invariant to scaling each head, so
    (delta/2)|theta|^2 has no minimiser (it shrinks the heads towards the singular point 0); anchoring at
    the initial parameters (L2-SP) keeps the problem well posed, and changes no formula of section 4.
    """

    model: FlatDual
    images: torch.Tensor
    texts: torch.Tensor
    batches: FixedBatches
    delta: float
    anchor: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if len(self.images) != len(self.texts):
            raise ValueError(f"{len(self.images)} image rows for {len(self.texts)} text rows")
        if len(self.batches.batch_id) != len(self.images):
            raise ValueError(f"batches cover {len(self.batches.batch_id)} positions, the data has {len(self.images)}")
        if self.delta < 0:
            raise ValueError(f"delta must be >= 0, got {self.delta}")
        if self.anchor is None:
            self.anchor = torch.zeros(self.model.n_params, dtype=torch.float64)
        if self.anchor.shape != (self.model.n_params,):
            raise ValueError(f"anchor must have shape ({self.model.n_params},), got {tuple(self.anchor.shape)}")

    @property
    def n_params(self) -> int:
        """P."""
        return self.model.n_params

    def batch_similarity(self, theta: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
        """S of the batch whose pair positions are ``members`` (B,): B x B; or of nb equal-sized batches
        (members nb x B, from ``batches.groups()``): nb x B x B."""
        return self.model.similarity(theta, self.images[members], self.texts[members])

    def objective(self, theta: torch.Tensor) -> torch.Tensor:
        """R(theta), scalar, nats."""
        data = sum(batch_loss(self.batch_similarity(theta, g)) for g in self.batches.groups())
        offset = theta - self.anchor
        return data + 0.5 * self.delta * offset.dot(offset)

    def gradient(self, theta: torch.Tensor) -> torch.Tensor:
        """grad R(theta), (P,) float64, detached."""
        return grad(self.objective)(theta.detach())

    def with_batches(self, batches: FixedBatches) -> ContrastiveProblem:
        """The same data and model on other batches (e.g. ``batches.without(removed)``)."""
        return ContrastiveProblem(self.model, self.images, self.texts, batches, self.delta, self.anchor)

    def pair_parts(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Pos, Neg, NegExact), each (N,) by pair position, at theta (no gradient). Removed positions: NaN."""
        n = len(self.batches.batch_id)
        out = torch.full((3, n), float("nan"), dtype=torch.float64)
        with torch.no_grad():
            for g in self.batches.groups():
                s = self.batch_similarity(theta, g)
                out[0, g], out[1, g], out[2, g] = positive_part(s), negative_part(s), negative_exact(s)
        return out[0], out[1], out[2]

    def hessian_operator(self, theta: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """v -> H v for the Hessian H of R at theta, for v (P,) or P x K.

        grad R is built once with its graph (create_graph); each product is then one backward pass through
        that graph (reverse over reverse; K columns at once with batched gradients). The graph is kept as long
        as the returned function lives.
        """
        leaf = theta.detach().clone().requires_grad_(True)
        gradient = torch.autograd.grad(self.objective(leaf), leaf, create_graph=True)[0]

        def apply(vectors: torch.Tensor) -> torch.Tensor:
            if vectors.ndim == 1:
                return torch.autograd.grad(gradient, leaf, grad_outputs=vectors, retain_graph=True)[0].detach()
            out = torch.autograd.grad(gradient, leaf, grad_outputs=vectors.T.contiguous(), retain_graph=True,
                                      is_grads_batched=True)[0]
            return out.T.detach()

        return apply

    def hessian(self, theta: torch.Tensor) -> torch.Tensor:
        """The exact Hessian of R at theta, P x P float64 (torch.func.hessian per group of batches, summed)."""
        h = self.delta * torch.eye(self.n_params, dtype=torch.float64)
        for g in self.batches.groups():
            h = h + torch.func.hessian(lambda t: batch_loss(self.batch_similarity(t, g)))(theta)
        return h
