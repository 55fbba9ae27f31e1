"""Raw curvature from float32 gradient rows: its float32 eigendecomposition against float64 `torch.linalg.eigh`
of the same sums (kept subspace, weights, damping and scores), and float64 rows kept in float64."""
from __future__ import annotations

import pytest
import torch

from influencegate.influence.curvature import RawCurvature

SHAPE, KEEP = (12, 16), 40  # D = 192 directions, the top 40 kept


def gradient_rows(dtype: torch.dtype, rows: int = 3000) -> torch.Tensor:
    """rows x r_out x r_in with a decaying spectrum (eigenvalues 0.97^i, distinct gaps), like projected gradients."""
    gen = torch.Generator().manual_seed(7)
    dim = SHAPE[0] * SHAPE[1]
    basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    scales = 0.97 ** (torch.arange(dim, dtype=torch.float64) / 2)
    return ((torch.randn(rows, dim, generator=gen, dtype=torch.float64) * scales) @ basis.T).to(dtype).reshape(rows, *SHAPE)


def fitted(rows: torch.Tensor, damping: float | None = None) -> RawCurvature:
    curvature = RawCurvature(SHAPE, inverse_rank=KEEP)
    for batch in rows.split(1024):
        curvature.update(batch)
    curvature.finalize(damping)
    return curvature


def reference(curvature: RawCurvature, damping: float | None) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """(top-KEEP eigenvectors D x KEEP, their weights, rest weight, lambda) from float64 eigh of the same sums."""
    evals, evecs = torch.linalg.eigh(curvature.outer_sum / curvature.count)
    lam = 0.1 * evals.mean().item() if damping is None else damping
    evals = evals.clamp_min(0)
    rest = evals[:-KEEP]
    rest_weight = ((rest / (rest + lam)).sum() / rest.sum()).item()
    return evecs[:, -KEEP:], 1.0 / (evals[-KEEP:] + lam) - rest_weight, rest_weight, lam


@pytest.mark.parametrize("damping", [None, 0.05])
def test_float32_rows_eigendecompose_like_float64_eigh(damping):
    rows = gradient_rows(torch.float32)
    curvature = fitted(rows, damping)
    basis, weights, rest_weight, lam = reference(curvature, damping)
    assert curvature.basis.dtype == torch.float64 and curvature.basis.shape == basis.shape
    # the kept subspace: the same orthogonal projector (eigenvectors within it may rotate or flip sign)
    projector = curvature.basis @ curvature.basis.T
    assert torch.linalg.matrix_norm(projector - basis @ basis.T, ord=2).item() < 1e-4
    assert torch.linalg.matrix_norm(projector - basis[:, :-1] @ basis[:, :-1].T, ord=2).item() > 0.5  # m - 1: fails
    torch.testing.assert_close(curvature.basis_weights, weights, rtol=1e-5, atol=0)
    assert curvature.rest_weight.item() == pytest.approx(rest_weight, rel=1e-5)
    assert curvature.damping_value == pytest.approx(lam, rel=1e-12)
    # scores of held-out rows against the float64 formula
    probe = gradient_rows(torch.float32, rows=200)[100:]
    flat = probe.reshape(len(probe), -1).double()
    expected = rest_weight * flat.pow(2).sum(1) + ((flat @ basis) ** 2 * weights).sum(1)
    torch.testing.assert_close(curvature.score(probe), expected, rtol=2e-5, atol=0)


def test_float64_rows_keep_a_float64_eigendecomposition():
    rows = gradient_rows(torch.float64)
    curvature = fitted(rows)
    basis, weights, rest_weight, _ = reference(curvature, None)
    probe = gradient_rows(torch.float64, rows=200)[100:]
    flat = probe.reshape(len(probe), -1)
    expected = rest_weight * flat.pow(2).sum(1) + ((flat @ basis) ** 2 * weights).sum(1)
    torch.testing.assert_close(curvature.score(probe), expected, rtol=1e-11, atol=0)
