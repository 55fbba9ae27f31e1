"""The contrastive quantities of DESIGN.md section 4, as functions of one batch's similarity matrix.

S is B x B with S_ij = u_i . v_j / tau (u: text, v: image embeddings) for the pairs of one batch.
p_row(k, j) = softmax over j of S_kj (text k against the batch's images): ``torch.softmax(S, dim=1)``.
p_col(j, k) = softmax over j of S_jk (image k against the batch's texts): ``torch.softmax(S, dim=0)``.
All losses are in nats, summed (not averaged) over the batch's pairs.
"""
from __future__ import annotations

import torch


def _log_probs(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p_row, log p_col), both B x B, indexed like S."""
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"S must be a square B x B matrix, got shape {tuple(s.shape)}")
    return torch.log_softmax(s, dim=1), torch.log_softmax(s, dim=0)


def positive_part(s: torch.Tensor) -> torch.Tensor:
    """Pos_n = -log p_row(n, n) - log p_col(n, n) for each pair n of the batch: (B,)."""
    log_row, log_col = _log_probs(s)
    return -torch.diagonal(log_row) - torch.diagonal(log_col)


def batch_loss(s: torch.Tensor) -> torch.Tensor:
    """L_b = sum_n Pos_n, the symmetric InfoNCE loss of the batch (scalar)."""
    return positive_part(s).sum()


def negative_part(s: torch.Tensor) -> torch.Tensor:
    """Neg_n = sum_{k != n} [p_row(k, n) + p_col(n, k)], pair n as a negative, first order: (B,)."""
    p_row, p_col = torch.softmax(s, dim=1), torch.softmax(s, dim=0)
    off = 1.0 - torch.eye(s.shape[0], dtype=s.dtype, device=s.device)
    return ((p_row * off).sum(0) + (p_col * off).sum(1))


def negative_exact(s: torch.Tensor) -> torch.Tensor:
    """NegExact_n = -sum_{k != n} [log(1 - p_row(k, n)) + log(1 - p_col(n, k))]: (B,).

    log(1 - p_row(k, n)) = logsumexp_{j != n} S_kj - logsumexp_j S_kj is computed in that form (no
    cancellation when p is close to 1). Removing pair n from its batch changes the batch loss by exactly
    -Pos_n - NegExact_n.
    """
    b = s.shape[0]
    if b < 2:
        return torch.zeros(b, dtype=s.dtype, device=s.device)
    eye = torch.eye(b, dtype=torch.bool, device=s.device)
    # without[k, n] = logsumexp over j != n of S[k, j]: row k's normaliser once column n is gone.
    masked = s[:, None, :].expand(b, b, b).masked_fill(eye[None], float("-inf"))
    row_without = torch.logsumexp(masked, dim=2)  # [k, n]
    col_without = torch.logsumexp(s.T[:, None, :].expand(b, b, b).masked_fill(eye[None], float("-inf")), dim=2)  # [k, n]
    log_one_minus_row = row_without - torch.logsumexp(s, dim=1)[:, None]  # log(1 - p_row(k, n)) at [k, n]
    log_one_minus_col = col_without - torch.logsumexp(s, dim=0)[:, None]  # log(1 - p_col(n, k)) at [k, n]
    terms = (log_one_minus_row + log_one_minus_col).masked_fill(eye, 0.0)
    return -terms.sum(0)


def directional_parts(s: torch.Tensor, ds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form derivatives of Pos_n and Neg_n along a direction in which S moves by dS (both B x B).

    dPos_n = -2 dS_nn + sum_j p_row(n, j) dS_nj + sum_j p_col(j, n) dS_jn;
    dNeg_n = sum_{k != n} [p_row(k, n)(dS_kn - sum_j p_row(k, j) dS_kj) + p_col(n, k)(dS_nk - sum_j p_col(j, k) dS_jk)].
    With dS = (dS/dtheta) s these are s^T grad Pos_n and s^T grad Neg_n (DESIGN.md section 4). Returns two (B,).
    """
    if ds.shape != s.shape:
        raise ValueError(f"dS has shape {tuple(ds.shape)}, S has {tuple(s.shape)}")
    p_row, p_col = torch.softmax(s, dim=1), torch.softmax(s, dim=0)
    row_mean = (p_row * ds).sum(1)  # [k] = sum_j p_row(k, j) dS_kj
    col_mean = (p_col * ds).sum(0)  # [k] = sum_j p_col(j, k) dS_jk
    d_pos = -2 * torch.diagonal(ds) + row_mean + col_mean
    off = 1.0 - torch.eye(s.shape[0], dtype=s.dtype, device=s.device)
    d_row = p_row * (ds - row_mean[:, None]) * off  # [k, n] = p_row(k, n)(dS_kn - row_mean_k)
    d_col = p_col * (ds - col_mean[None, :]) * off  # [n, k] = p_col(n, k)(dS_nk - col_mean_k)
    return d_pos, d_row.sum(0) + d_col.sum(1)
