"""The exact reference's memory-lean solve (one Cholesky factor, rows in chunks) against the explicit inverse."""
from __future__ import annotations

import pytest
import torch

from influencegate.influence import exact


@pytest.mark.parametrize("rows,cols", [(40, 7), (7, 40)])  # the P x P system (P <= M) and the Woodbury path
def test_damped_quadratic_scores_match_the_explicit_inverse_whatever_the_chunk(rows, cols, monkeypatch):
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    damping = torch.rand(cols, generator=gen, dtype=torch.float64) + 0.1
    inverse = torch.linalg.inv(g.T @ g / rows + torch.diag(damping))
    expected = torch.einsum("mp,pq,mq->m", g, inverse, g)
    for chunk in (3, 4096):  # several chunks with a ragged last one, and one chunk
        monkeypatch.setattr(exact, "ROW_CHUNK", chunk)
        assert torch.allclose(exact.damped_quadratic_scores(g, damping), expected, rtol=1e-9, atol=0)
