"""ECIF: the effect of removing each pair, through its positive and negative parts (docs/design.md section 4).

Removing pair n moves theta by dtheta_n ~= H^-1 grad(Pos_n + Neg_n) (H: damped Hessian of R), and a
reference loss L' by dL'_n ~= grad L'^T dtheta_n = positive_if_n + negative_if_n.

- Cheap path (``pair_influence``): s = H^-1 grad L' once, then dS = (dS/dtheta) s for every batch from
  Jacobian-vector products of the embeddings, and the closed forms of ``contrastive.directional_parts``:
  O(one forward pass) after the solve.
- Explicit path (``pair_gradients`` + ``explicit_pair_influence``): per-pair gradients of Pos_n and Neg_n
  (P each) and H^-1 applied to every one of them; the reference the cheap path is tested against, and what
  self-influence and the removal edit need (``pair_self_influence`` streams them batch by batch).
- Relative influence (``relative_influence``): the influence divided by the pair's own influence scale
  sqrt(g_n^T H^-1 g_n), so that trace-back is not dominated by pairs that move every loss a lot.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch.func import jacrev, jvp
from tqdm.auto import tqdm

from influencegate.ecif.contrastive import directional_parts, negative_part, positive_part
from influencegate.ecif.hessian import CGSolver, ExactSolver, LowRankSolver
from influencegate.ecif.problem import ContrastiveProblem
from influencegate.models.dual import similarity_matrix

Solver = ExactSolver | CGSolver | LowRankSolver


def loss_gradient(loss: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor) -> torch.Tensor:
    """grad L'(theta), (P,) float64, for a scalar loss L' of theta."""
    return torch.func.grad(loss)(theta).detach()


def similarity_jvps(problem: ContrastiveProblem, theta: torch.Tensor, direction: torch.Tensor,
                    progress: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(members nb x B, S nb x B x B, dS nb x B x B) for every group of equal-sized batches
    (``batches.groups()``): S at theta and its directional derivative dS = (dS/dtheta) direction.

    One forward-mode JVP of the group's embeddings: S = u v^T / tau is bilinear in the embeddings, so
    dS = (du v^T + u dv^T) / tau, where du = 0 when no trainable parameter acts on the texts. Cost: about
    two forward passes of the trainable part over the data, plus the batched B x B products.
    """
    tau, text_moves = problem.model.module.tau, problem.model.texts_depend_on_theta
    for members in tqdm(problem.batches.groups(), desc="ecif scores (JVP)", unit="group", disable=not progress):
        index = members.reshape(-1)
        with torch.no_grad():
            (v, u), (dv, du) = jvp(lambda t: problem.model.embed(t, problem.images[index], problem.texts[index]),
                                   (theta,), (direction,))
        v, u, dv, du = (x.reshape(*members.shape, -1) for x in (v, u, dv, du))
        d_sim = similarity_matrix(u, dv, tau)
        if text_moves:
            d_sim = d_sim + similarity_matrix(du, v, tau)
        yield members, similarity_matrix(u, v, tau), d_sim


def pair_influence(problem: ContrastiveProblem, theta: torch.Tensor, s: torch.Tensor,
                   progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The cheap path: (s^T grad Pos_n, s^T grad Neg_n) for every pair position n, each (N,) float64.

    With s = H^-1 grad L' these are positive_if_n and negative_if_n: dS along s for every batch
    (``similarity_jvps``), then the closed forms of ``contrastive.directional_parts``. Positions not in
    any batch (removed) are NaN.
    """
    n = len(problem.batches.batch_id)
    pos, neg = torch.full((n,), float("nan"), dtype=torch.float64), torch.full((n,), float("nan"), dtype=torch.float64)
    for members, sim, d_sim in similarity_jvps(problem, theta, s, progress):
        pos[members], neg[members] = directional_parts(sim, d_sim)
    return pos, neg


def batch_pair_gradients(problem: ContrastiveProblem, theta: torch.Tensor, progress: bool = False,
                         desc: str = "ecif per-pair gradients") -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(members (B,), grad Pos (B x P), grad Neg (B x P)) of every batch in turn, float64 (reverse mode, one
    Jacobian per batch): per-pair gradients without holding them all (memory 2 B P)."""

    def parts(t: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
        sim = problem.batch_similarity(t, members)
        return torch.stack([positive_part(sim), negative_part(sim)])

    for members in tqdm(problem.batches.members, desc=desc, unit="batch", disable=not progress):
        jac = jacrev(parts)(theta, members).detach()  # 2 x B x P
        yield members, jac[0], jac[1]


def pair_gradients(problem: ContrastiveProblem, theta: torch.Tensor,
                   progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair gradients (grad Pos_n, grad Neg_n), each N x P float64 by pair position
    (``batch_pair_gradients`` gathered). Memory 2 N P: small problems, or the explicit reference. Removed
    positions: NaN."""
    n = len(problem.batches.batch_id)
    g_pos = torch.full((n, problem.n_params), float("nan"), dtype=torch.float64)
    g_neg = torch.full_like(g_pos, float("nan"))
    for members, pos, neg in batch_pair_gradients(problem, theta, progress):
        g_pos[members], g_neg[members] = pos, neg
    return g_pos, g_neg


def explicit_pair_influence(g_pos: torch.Tensor, g_neg: torch.Tensor, solver: Solver,
                            ref_gradient: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad L'^T H^-1 grad Pos_n, grad L'^T H^-1 grad Neg_n) for every row n of g_pos, g_neg (N x P):
    H^-1 applied to each per-pair gradient (2N right-hand sides). Returns two (N,)."""
    pos = ref_gradient @ solver.solve(g_pos.T)
    neg = ref_gradient @ solver.solve(g_neg.T)
    return pos, neg


def self_influence(g_pos: torch.Tensor, g_neg: torch.Tensor, solver: Solver) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-influence g_n^T H^-1 g_n with g_n = grad(Pos_n + Neg_n), split as (grad Pos_n^T H^-1 g_n,
    grad Neg_n^T H^-1 g_n) so that the two parts add up to it. Inputs N x P; returns two (N,)."""
    dtheta = solver.solve((g_pos + g_neg).T).T  # N x P
    return (g_pos * dtheta).sum(1), (g_neg * dtheta).sum(1)


def pair_self_influence(problem: ContrastiveProblem, theta: torch.Tensor, solver: Solver,
                        progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``self_influence`` of every pair position, batch by batch (memory 2 B P, not 2 N P): two (N,) float64,
    NaN at positions in no batch (removed)."""
    n = len(problem.batches.batch_id)
    pos, neg = torch.full((n,), float("nan"), dtype=torch.float64), torch.full((n,), float("nan"), dtype=torch.float64)
    for members, g_pos, g_neg in batch_pair_gradients(problem, theta, progress, "ecif self-influence"):
        pos[members], neg[members] = self_influence(g_pos, g_neg, solver)
    return pos, neg


def relative_influence(influence: torch.Tensor, self_influence: torch.Tensor) -> torch.Tensor:
    """l-relative influence (RelatIF, Barshan et al. 2020): influence_n / sqrt(g_n^T H^-1 g_n).

    influence: (N,) or Q x N, e.g. positive_if + negative_if of each pair position n for one or Q losses;
    self_influence: (N,) g_n^T H^-1 g_n (``self_influence``, its two parts summed), > 0 where H is positive
    definite and g_n != 0. It is the influence of pair n under the constraint that its removal moves the
    parameters by at most one unit of H-norm (|dtheta_n|_H = sqrt(g_n^T H^-1 g_n)), so pairs that are merely
    influential on everything (large self-influence) do not dominate a trace-back. NaN positions stay NaN;
    ValueError for a non-positive self-influence.
    """
    if influence.shape[-1] != self_influence.shape[0] or self_influence.ndim != 1:
        raise ValueError(f"influence {tuple(influence.shape)} and self-influence {tuple(self_influence.shape)} "
                         "must share the pair dimension N")
    if bool((self_influence <= 0).any()):
        raise ValueError("self-influence g^T H^-1 g must be positive (H positive definite, g != 0)")
    return influence / self_influence.sqrt()


def removal_edit(problem: ContrastiveProblem, theta: torch.Tensor, solver: Solver,
                 positions: Sequence[int]) -> torch.Tensor:
    """Parameters after removing the pairs at ``positions`` without retraining (P,):
    theta_new = theta + sum_n dtheta_n = theta + H^-1 sum_n grad(Pos_n + Neg_n): one backward pass per
    group of batches holding removed pairs, and one solve. ValueError for a position that is not in any batch."""
    positions = torch.as_tensor(list(positions), dtype=torch.int64)
    if positions.numel() == 0:
        return theta.clone()
    batch_id = problem.batches.batch_id
    if int(positions.min()) < 0 or int(positions.max()) >= len(batch_id) or (batch_id[positions.numpy()] < 0).any():
        raise ValueError(f"positions to remove must be pairs of the training batches (0..{len(batch_id) - 1})")
    total = torch.zeros_like(theta)
    chosen = torch.zeros(len(problem.batches.batch_id), dtype=torch.bool)
    chosen[positions] = True
    for members in problem.batches.groups():
        mask = chosen[members]
        if mask.any():
            def removed_parts(t: torch.Tensor, members: torch.Tensor = members, mask: torch.Tensor = mask) -> torch.Tensor:
                sim = problem.batch_similarity(t, members)
                return (positive_part(sim) + negative_part(sim))[mask].sum()

            total += torch.func.grad(removed_parts)(theta)
    return theta + solver.solve(total)
