"""Peer attribution methods on the same model and objective as ECIF (issue 16, build item 2).

Every method returns tau (N,) by pair position: the predicted change of the reference loss L' when pair n is
removed (positive: removing n raises L'), ECIF's convention, so that LOO and LDS compare them as they are.
The per-pair loss of the peers is the pair's own contrastive term Pos_n (in its fixed batch).
- tracin: dattri's TracInAttributor over the Adam checkpoints, weights = the learning rate, gradients
  randomly projected to PROJ_DIM (dattri's default projector);
- trak: dattri's TRAKAttributor at theta_hat (one model, PROJ_DIM), correct-class probability
  exp(-Pos_n) = p_row(n, n) p_col(n, n);
- logra: influence with the empirical Fisher of the projected per-pair gradients Phi grad Pos_n (the
  LoGra / EK-FAC family's curvature, in ECIF's own projection), damped;
- ecif_positive: ECIF's positive part alone (from the ECIF run).
A dattri sample is one pair with its whole fixed batch: (images B x ..., texts B x d, valid B, onehot B),
batches padded to equal size (padded rows and columns masked out of the softmaxes).
"""
from __future__ import annotations

import torch
from dattri.algorithm.tracin import TracInAttributor
from dattri.algorithm.trak import TRAKAttributor
from dattri.task import AttributionTask
from torch.utils.data import DataLoader, TensorDataset

from influencegate.ecif import ContrastiveProblem, FixedBatches, positive_part
from influencegate.ecif.projected import ProjectedPairs

PROJ_DIM = 512
_MASKED = -1e4  # a logit whose softmax weight is 0 in float64


def batch_samples(images: torch.Tensor, texts: torch.Tensor, batches: FixedBatches) -> TensorDataset:
    """One dattri sample per pair position (in position order): its batch's images, texts, a validity mask
    and the pair's one-hot position, padded to the largest batch."""
    size = max(len(m) for m in batches.members)
    n = len(batches.batch_id)
    out_images = torch.zeros(n, size, *images.shape[1:], dtype=images.dtype)
    out_texts = torch.zeros(n, size, texts.shape[1], dtype=texts.dtype)
    valid = torch.zeros(n, size, dtype=images.dtype)
    onehot = torch.zeros(n, size, dtype=images.dtype)
    for members in batches.members:
        for slot, position in enumerate(members.tolist()):
            out_images[position, :len(members)] = images[members]
            out_texts[position, :len(members)] = texts[members]
            valid[position, :len(members)] = 1.0
            onehot[position, slot] = 1.0
    return TensorDataset(out_images, out_texts, valid, onehot)


def _task(problem: ContrastiveProblem, checkpoints: list[torch.Tensor]) -> tuple[AttributionTask, callable]:
    module, tau = problem.model.module, problem.model.module.tau

    def pair_loss(params: dict, data: tuple) -> torch.Tensor:
        images, texts, valid, onehot = data
        v, u = torch.func.functional_call(module, params, (images, texts))
        sim = u @ v.T / tau
        mask = valid[:, None] * valid[None, :]
        sim = sim * mask + _MASKED * (1 - mask)
        return (positive_part(sim) * onehot).sum()

    states = [problem.model.module_at(theta, torch.float64).state_dict() for theta in checkpoints]
    return AttributionTask(loss_func=pair_loss, model=module, checkpoints=states), pair_loss


def _loader(dataset: TensorDataset) -> DataLoader:
    return DataLoader(dataset, batch_size=256, shuffle=False)


def tracin(problem: ContrastiveProblem, checkpoints: list[torch.Tensor], lr: float, reference: TensorDataset) -> torch.Tensor:
    """TracIn: sum over checkpoints of lr x grad l_ref . grad Pos_n (projected), averaged over the reference
    pairs: (N,)."""
    task, _ = _task(problem, checkpoints)
    weights = torch.full((len(checkpoints),), lr, dtype=torch.float64)
    attributor = TracInAttributor(task, weight_list=weights, normalized_grad=False,
                                  projector_kwargs={"proj_dim": PROJ_DIM, "proj_seed": 0})
    train = batch_samples(problem.images, problem.texts, problem.batches)
    return attributor.attribute(_loader(train), _loader(reference)).mean(1).to(torch.float64)


def trak(problem: ContrastiveProblem, theta: torch.Tensor, reference: TensorDataset) -> torch.Tensor:
    """TRAK (one model at theta_hat), averaged over the reference pairs: (N,)."""
    task, pair_loss = _task(problem, [theta])

    def correct_probability(params: dict, data: tuple) -> torch.Tensor:
        return torch.exp(-pair_loss(params, data))

    attributor = TRAKAttributor(task, correct_probability, projector_kwargs={"proj_dim": PROJ_DIM, "proj_seed": 0},
                                regularization=1e-8)
    attributor.cache(_loader(batch_samples(problem.images, problem.texts, problem.batches)))
    return attributor.attribute(_loader(reference)).mean(1).to(torch.float64)


def logra(pairs: ProjectedPairs, loss_gradient: torch.Tensor, damping_ratio: float) -> torch.Tensor:
    """(Phi grad L')^T (F + lambda I)^-1 Phi grad Pos_n with F = sum_n (Phi grad Pos_n)(Phi grad Pos_n)^T and
    lambda = damping_ratio x tr(F) / k: (N,)."""
    g = pairs.g_pos
    fisher = g.T @ g
    damping = damping_ratio * float(fisher.trace()) / len(fisher)
    s = torch.linalg.solve(fisher + damping * torch.eye(len(fisher), dtype=torch.float64), pairs.phi @ loss_gradient)
    return g @ s
