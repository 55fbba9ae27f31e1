"""The contrastive quantities of docs/design.md section 4, as functions of a batch's similarity matrix.

S is ... x B x B with S_ij = u_i . v_j / tau (u: text, v: image embeddings) for the B pairs of one batch;
leading dimensions index batches of equal size, processed at once.
p_row(k, j) = softmax over j of S_kj (text k against the batch's images): ``torch.softmax(S, dim=-1)``.
p_col(j, k) = softmax over j of S_jk (image k against the batch's texts): ``torch.softmax(S, dim=-2)``.
Per-pair results are ... x B (pair n of each batch); losses are in nats, summed (not averaged) over pairs.
"""
from __future__ import annotations

import torch


def _check(s: torch.Tensor) -> None:
    if s.ndim < 2 or s.shape[-1] != s.shape[-2]:
        raise ValueError(f"S must be ... x B x B, got shape {tuple(s.shape)}")


def _off_diagonal(s: torch.Tensor) -> torch.Tensor:
    """B x B float mask: 1 off the diagonal, 0 on it."""
    return 1.0 - torch.eye(s.shape[-1], dtype=s.dtype, device=s.device)


def positive_part(s: torch.Tensor) -> torch.Tensor:
    """Pos_n = -log p_row(n, n) - log p_col(n, n) for each pair n: ... x B."""
    _check(s)
    log_row, log_col = torch.log_softmax(s, dim=-1), torch.log_softmax(s, dim=-2)
    return -torch.diagonal(log_row, dim1=-2, dim2=-1) - torch.diagonal(log_col, dim1=-2, dim2=-1)


def batch_loss(s: torch.Tensor) -> torch.Tensor:
    """Sum of L_b = sum_n Pos_n (the symmetric InfoNCE loss) over the given batches: scalar."""
    return positive_part(s).sum()


def negative_part(s: torch.Tensor) -> torch.Tensor:
    """Neg_n = sum_{k != n} [p_row(k, n) + p_col(n, k)], pair n as a negative, first order: ... x B."""
    _check(s)
    off = _off_diagonal(s)
    return (torch.softmax(s, dim=-1) * off).sum(-2) + (torch.softmax(s, dim=-2) * off).sum(-1)


def negative_exact(s: torch.Tensor) -> torch.Tensor:
    """NegExact_n = -sum_{k != n} [log(1 - p_row(k, n)) + log(1 - p_col(n, k))]: ... x B.

    log(1 - p_row(k, n)) = logsumexp_{j != n} S_kj - logsumexp_j S_kj is computed in that form (no
    cancellation when p is close to 1); memory ... x B^3. Removing pair n from its batch changes the batch
    loss by exactly -Pos_n - NegExact_n.
    """
    _check(s)
    b = s.shape[-1]
    if b < 2:
        return torch.zeros(s.shape[:-1], dtype=s.dtype, device=s.device)
    eye = torch.eye(b, dtype=torch.bool, device=s.device)
    expand = (*s.shape[:-2], b, b, b)
    # [..., k, n] = logsumexp over j != n of S[..., k, j] (row k without column n) and of S[..., j, k].
    row_without = torch.logsumexp(s[..., :, None, :].expand(expand).masked_fill(eye, float("-inf")), dim=-1)
    col_masked = s.transpose(-1, -2)[..., :, None, :].expand(expand).masked_fill(eye, float("-inf"))
    col_without = torch.logsumexp(col_masked, dim=-1)
    log_one_minus_row = row_without - torch.logsumexp(s, dim=-1)[..., :, None]  # log(1 - p_row(k, n)) at [k, n]
    log_one_minus_col = col_without - torch.logsumexp(s, dim=-2)[..., :, None]  # log(1 - p_col(n, k)) at [k, n]
    return -(log_one_minus_row + log_one_minus_col).masked_fill(eye, 0.0).sum(-2)


def directional_parts(s: torch.Tensor, ds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form derivatives of Pos_n and Neg_n along a direction in which S moves by dS (both ... x B x B).

    dPos_n = -2 dS_nn + sum_j p_row(n, j) dS_nj + sum_j p_col(j, n) dS_jn;
    dNeg_n = sum_{k != n} [p_row(k, n)(dS_kn - sum_j p_row(k, j) dS_kj) + p_col(n, k)(dS_nk - sum_j p_col(j, k) dS_jk)].
    With dS = (dS/dtheta) s these are s^T grad Pos_n and s^T grad Neg_n (docs/design.md section 4). Returns two ... x B.
    """
    _check(s)
    if ds.shape != s.shape:
        raise ValueError(f"dS has shape {tuple(ds.shape)}, S has {tuple(s.shape)}")
    p_row, p_col = torch.softmax(s, dim=-1), torch.softmax(s, dim=-2)
    row_mean = (p_row * ds).sum(-1)  # [k] = sum_j p_row(k, j) dS_kj
    col_mean = (p_col * ds).sum(-2)  # [k] = sum_j p_col(j, k) dS_jk
    d_pos = -2 * torch.diagonal(ds, dim1=-2, dim2=-1) + row_mean + col_mean
    off = _off_diagonal(s)
    d_row = p_row * (ds - row_mean[..., :, None]) * off  # [k, n] = p_row(k, n)(dS_kn - row_mean_k)
    d_col = p_col * (ds - col_mean[..., None, :]) * off  # [n, k] = p_col(n, k)(dS_nk - col_mean_k)
    return d_pos, d_row.sum(-2) + d_col.sum(-1)
