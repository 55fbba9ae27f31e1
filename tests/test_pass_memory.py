"""Pass sizing (influence.pass_memory): the probe against a hand count, the plan's arithmetic, and scores that
do not depend on how a batch is cut into passes."""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
import torch
import torch.nn as nn

from influencegate import InfluenceConfig, InfluenceScorer
from influencegate.data import ImageDataset
from influencegate.influence import scorer as scorer_module
from influencegate.influence.pass_memory import MAX_ROWS_PER_PASS, activation_bytes_per_row, plan_pass


def test_probe_counts_every_leaf_output_of_one_image():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    image = torch.zeros(1, 1, 8, 8)
    by_hand = 4 * (64 + 256 + 256 + 256 + 5)  # fp32 bytes: image, conv, relu, flatten, linear outputs
    assert activation_bytes_per_row(model, image, nullcontext()) == by_hand


def test_probe_sees_the_narrower_outputs_of_bf16_autocast():
    model = nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 8))
    image = torch.zeros(1, 16)
    fp32 = activation_bytes_per_row(model, image, nullcontext())
    bf16 = activation_bytes_per_row(model, image, torch.autocast("cpu", dtype=torch.bfloat16))
    assert fp32 == 4 * (16 + 32 + 8)
    assert bf16 == 4 * 16 + 2 * (32 + 8)


@pytest.mark.parametrize("budget_rows,batch,draws,expected", [
    (10**6, 256, 64, (256, MAX_ROWS_PER_PASS // 512)),  # capped at 4096 rows: 8 draws of the whole batch
    (1536, 256, 64, (256, 3)),                          # 3 draws x 2 x 256 rows fit
    (512, 256, 64, (256, 1)),                           # exactly one draw of the batch
    (100, 256, 64, (50, 1)),                            # one draw of 50 images per step
    (1, 256, 64, (1, 1)),                               # never below one image
    (10**6, 4, 2, (4, 2)),                              # never more draws than asked for
])
def test_plan_fills_the_budget_without_exceeding_it(budget_rows, batch, draws, expected):
    per_row = 1000
    plan = plan_pass(per_row, budget_rows * per_row, batch, draws)
    assert (plan.samples_per_step, plan.draws_per_pass) == expected
    rows = 2 * plan.samples_per_step * plan.draws_per_pass
    assert rows <= max(2, min(budget_rows, MAX_ROWS_PER_PASS))


def test_an_explicit_draws_per_pass_is_kept():
    plan = plan_pass(1000, 10**9, batch_size=16, draws=8, draws_per_pass=3)
    assert (plan.samples_per_step, plan.draws_per_pass) == (16, 3)


def test_scores_do_not_depend_on_how_passes_are_cut(monkeypatch):
    """A budget of a few rows (steps of 2-3 images, one draw per pass) scores exactly like one pass per batch."""
    gen = torch.Generator().manual_seed(0)
    data = ImageDataset.from_tensors(torch.randn(20, 1, 6, 6, generator=gen, dtype=torch.float64),
                                     [f"s{i}" for i in range(20)])
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(48, 4)).double()
    config = InfluenceConfig(precision="fp64", draws=3, batch_size=8, progress=False, sigma=0.3)

    whole = InfluenceScorer(model, config)
    expected = whole.fit(data).score(data)
    assert whole.pass_plan(data).samples_per_step == 8

    per_row = whole.pass_plan(data).bytes_per_row
    monkeypatch.setattr(scorer_module, "pass_budget_bytes", lambda device: 5 * per_row)
    small = InfluenceScorer(model, config)
    assert (small.pass_plan(data).samples_per_step, small.pass_plan(data).draws_per_pass) == (2, 1)
    got = small.fit(data).score(data)
    assert got["sample_id"].tolist() == expected["sample_id"].tolist()
    np.testing.assert_allclose(got["influence"], expected["influence"], rtol=1e-9)


def test_cpu_budget_counts_reclaimable_page_cache():
    """The CPU budget starts from MemAvailable (free + reclaimable cache), never less than the free pages."""
    import os

    from influencegate.influence.pass_memory import available_ram_bytes

    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert available_ram_bytes() >= free > 0
