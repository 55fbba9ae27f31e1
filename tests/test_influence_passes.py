"""How passes are cut and what they share: pair gradients, draws grouped into passes, the pilot's stash."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn as nn

from influencegate import InfluenceConfig, InfluenceScorer
from influencegate.data import ImageDataset
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


@pytest.fixture(scope="module")
def problem():
    gen = torch.Generator().manual_seed(0)
    data = ImageDataset.from_tensors(torch.randn(80, 1, 6, 6, generator=gen), [f"s{i:02d}" for i in range(80)])
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(48, 4))
    return model, data


def test_the_pilot_reuses_the_fit_draws_and_gives_what_its_own_pass_gives(problem, monkeypatch):
    """A pilot of 30 samples (a step of 16 and part of the next) with fit_draws 8 of 24 takes draws 0-7 from
    the curvature pass and passes over draws 8-23 only; its per-draw scores, the chosen draws and the scores
    equal those of the pilot's own pass over all 24 draws (stash refused by a zero budget)."""
    from influencegate.influence import scorer as scorer_module

    model, data = problem
    monkeypatch.setattr(scorer_module, "PILOT_SAMPLES", 30)
    config = InfluenceConfig(draws=24, fit_draws=8, batch_size=16, draws_per_pass=5, progress=False,
                             target_stability=0.5)
    passes: list[tuple[str, int]] = []
    original = InfluenceScorer._pass

    def recording(self, dataset, projectors, desc, *args, **kwargs):
        passes.append((desc, kwargs.get("first_draw", 0), len(dataset)))
        return original(self, dataset, projectors, desc, *args, **kwargs)

    monkeypatch.setattr(InfluenceScorer, "_pass", recording)
    stashed = InfluenceScorer(model, config).fit(data)
    assert passes == [("curvature", 0, 80), ("draws pilot", 8, 30)]
    monkeypatch.setattr(scorer_module, "STASH_BUDGET_FRACTION", 0.0)
    passes.clear()
    alone = InfluenceScorer(model, config).fit(data)
    assert passes == [("curvature", 0, 80), ("draws pilot", 0, 30)]
    assert list(stashed._pilot) == list(alone._pilot) == data.sample_ids[:30]
    for sid in data.sample_ids[:30]:
        np.testing.assert_allclose(stashed._pilot[sid], alone._pilot[sid], rtol=1e-5)
    assert stashed.score_draws == alone.score_draws and stashed.draw_predictions == pytest.approx(alone.draw_predictions)
    np.testing.assert_allclose(stashed.score(data)["influence"], alone.score(data)["influence"], rtol=1e-5)
    whole = InfluenceScorer(model, replace(config, draws_per_pass=24)).fit(data)  # other pass cuts, same scores
    np.testing.assert_allclose(whole.score(data)["influence"], alone.score(data)["influence"], rtol=1e-5)


@pytest.mark.parametrize("dim", [5, 256, 300, 1024])
def test_gram_from_the_upper_blocks_equals_the_full_product(dim):
    from influencegate.influence.curvature import gram

    rows = torch.randn(40, dim, generator=torch.Generator().manual_seed(dim), dtype=torch.float64)
    torch.testing.assert_close(gram(rows, block=128), rows.T @ rows, rtol=1e-12, atol=1e-12)
