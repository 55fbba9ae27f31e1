"""What the passes compute and keep: pair gradients, the pilot's stash, the curvature's Gram sums (the stashed
pilot against its own pass: tests/test_draw_choice.py)."""
from __future__ import annotations

import pytest
import torch

from influencegate.influence.capture import pair_gradients
from influencegate.influence.pilot import PilotStash, stash_bytes


@pytest.mark.parametrize("r_out, r_in, positions", [(8, 9, 64), (16, 32, 16), (32, 32, 4), (32, 32, 1), (3, 2, 5)])
def test_pair_gradients_equal_the_per_row_products_summed_over_both_rows(r_out, r_in, positions):
    """Reference: delta a^T per row (the einsum the engine used before), then rows m and n + m added."""
    gen = torch.Generator().manual_seed(r_out * 100 + positions)
    n = 6
    delta = torch.randn(2 * n, r_out, positions, generator=gen, dtype=torch.float64)
    a = torch.randn(2 * n, r_in, positions, generator=gen, dtype=torch.float64)
    per_row = torch.einsum("bol,bil->boi", delta, a)
    expected = per_row[:n] + per_row[n:]
    torch.testing.assert_close(pair_gradients(delta, a), expected, rtol=1e-12, atol=1e-12)


def test_the_stash_keeps_the_first_samples_of_every_pass_of_a_step():
    stash = PilotStash(5)
    grads = lambda c, b: {"l": torch.arange(c * b, dtype=torch.float32).reshape(c * b, 1, 1)}  # noqa: E731
    for ids in (["a", "b", "c"], ["d", "e", "f"], ["g"]):  # steps of 3, 3, 1 samples; passes of 2 and 1 draws
        stash.add(ids, range(0, 2), grads(2, len(ids)))
        stash.add(ids, range(2, 3), grads(1, len(ids)))
    kept = [(ids, ks, g["l"].flatten().tolist()) for ids, ks, g in stash.records]
    assert kept == [(["a", "b", "c"], range(0, 2), [0, 1, 2, 3, 4, 5]), (["a", "b", "c"], range(2, 3), [0, 1, 2]),
                    (["d", "e"], range(0, 2), [0, 1, 3, 4]), (["d", "e"], range(2, 3), [0, 1])]
    assert stash_bytes(5, 3, [(2, 3), (4, 4)], torch.float32) == 5 * 3 * 22 * 4
    with pytest.raises(ValueError, match="at least one sample"):
        PilotStash(0)


@pytest.mark.parametrize("dim", [5, 256, 300, 1024])
def test_gram_from_the_upper_blocks_equals_the_full_product(dim):
    from influencegate.influence.curvature import gram

    rows = torch.randn(40, dim, generator=torch.Generator().manual_seed(dim), dtype=torch.float64)
    torch.testing.assert_close(gram(rows, block=128), rows.T @ rows, rtol=1e-12, atol=1e-12)
