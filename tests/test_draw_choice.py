"""Choosing the number of draws from a pilot (influence.stability, InfluenceConfig.target_stability)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn as nn

from influencegate import InfluenceConfig, InfluenceScorer
from influencegate.data import ImageDataset
from influencegate.influence.fit_state import fit_state, restore_fit
from influencegate.influence.stability import candidate_draws, choose_draws, simulated_stability
from influencegate.cli.score import pilot_says
from influencegate.workflows.image_audit import score_dataset


def noisy_draws(n: int, k: int, noise: float, seed: int = 0, shared: float = 0.0,
                signal: np.ndarray | None = None) -> np.ndarray:
    """N x K per-draw scores: a per-sample value (`signal`, else standard normal), plus independent noise of
    spread `noise` per draw, plus `shared` x a draw effect common to every sample with a per-sample loading
    (as under common noise: which draws a seed gets moves every sample's error alike)."""
    rng = np.random.default_rng(seed)
    value = rng.normal(size=(n, 1)) if signal is None else signal
    loading = np.random.default_rng(12345).normal(size=(n, 1))  # the samples' sensitivity: fixed, not per seed
    return value + noise * rng.normal(size=(n, k)) + shared * loading * rng.normal(size=(1, k))


def test_simulated_pairs_match_independent_seeds_in_mean_and_spread():
    """The Spearman between two disjoint sets of K draws of one run follows the Spearman between two
    independent runs of K draws: the same expected value and spread, with and without a shared draw effect
    (simulated pairs averaged over 5 runs, against 100 pairs of independent runs)."""
    from scipy.stats import spearmanr

    signal = np.random.default_rng(7).normal(size=(1000, 1))
    for shared in (0.0, 1.0):
        simulated = np.stack([simulated_stability(noisy_draws(1000, 64, noise=2.0, seed=1 + j, shared=shared,
                                                              signal=signal), 24) for j in range(5)])
        seeds = [noisy_draws(1000, 24, noise=2.0, seed=100 + j, shared=shared, signal=signal) for j in range(200)]
        real = np.array([spearmanr(a.mean(axis=1), b.mean(axis=1)).statistic
                         for a, b in zip(seeds[0::2], seeds[1::2])])
        assert simulated.mean() == pytest.approx(real.mean(), abs=0.015)
        assert 0.6 < simulated.std(axis=1).mean() / real.std() < 1.6
    assert real.std() > 0.02  # the shared draw effect spreads one pair of seeds around the expected value


def test_rank_correlation_of_many_columns_equals_scipy_per_column():
    """influence.ranking.rank_correlation (one vectorised step for all simulated pairs) against scipy's spearmanr
    column by column: with ties, a NaN (NaN) and a constant column (NaN); `spearman` is its two-vector case."""
    from scipy.stats import spearmanr

    from influencegate.influence import spearman
    from influencegate.influence.ranking import rank_correlation

    rng = np.random.default_rng(3)
    a = rng.integers(0, 12, size=(200, 6)).astype(float)  # many ties
    b = a + rng.normal(scale=4.0, size=a.shape)
    a[5, 4], b[:, 5] = np.nan, 1.0
    got = rank_correlation(a, b)
    expected = [spearmanr(a[:, j], b[:, j]).statistic for j in range(4)]
    np.testing.assert_allclose(got[:4], expected, rtol=0, atol=1e-12)
    assert 0.2 < min(expected) and np.isnan(got[4]) and np.isnan(got[5])
    assert spearman(a[:, 0], b[:, 0]) == pytest.approx(expected[0], abs=1e-12)
    assert spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)


def test_choose_draws_takes_the_fewest_whose_simulated_pairs_reach_the_target():
    assert candidate_draws(64) == [16, 20, 24, 28, 32, 40, 48, 64]
    assert candidate_draws(20) == [16, 20]
    quiet = noisy_draws(500, 64, noise=0.3)
    chosen, expected, q10 = choose_draws(quiet, 0.95)
    assert chosen == 16 and q10[16] >= 0.95
    loud = noisy_draws(500, 64, noise=20.0)
    chosen, expected, q10 = choose_draws(loud, 0.95)
    assert chosen == 64 and max(q10.values()) < 0.95
    middle = noisy_draws(2000, 64, noise=1.0)  # per-draw reliability 0.5: K = 16 gives ~0.94, K = 24 ~0.96
    chosen, expected, q10 = choose_draws(middle, 0.95)
    assert 16 < chosen < 64 and q10[chosen] >= 0.95
    assert all(v < 0.95 for k, v in q10.items() if k < chosen)
    spread = noisy_draws(2000, 64, noise=1.0, shared=0.3)  # a shared draw effect widens the pairs
    chosen, expected, q10 = choose_draws(spread, 0.95)
    assert any(expected[k] >= 0.95 for k in expected if k < chosen)  # the mean alone would stop earlier
    assert all(q10[k] <= expected[k] for k in q10)


@pytest.fixture(scope="module")
def small_problem():
    gen = torch.Generator().manual_seed(0)
    data = ImageDataset.from_tensors(torch.randn(80, 1, 6, 6, generator=gen), [f"s{i:02d}" for i in range(80)])
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(48, 4))
    return model, data


def record_passes(monkeypatch) -> list[tuple[str, int, int]]:
    """(description, first draw, samples) of every streaming pass InfluenceScorer makes from now on."""
    passes: list[tuple[str, int, int]] = []
    original = InfluenceScorer._pass

    def recording(self, dataset, projectors, desc, *args, **kwargs):
        passes.append((desc, kwargs.get("first_draw", 0), len(dataset)))
        return original(self, dataset, projectors, desc, *args, **kwargs)

    monkeypatch.setattr(InfluenceScorer, "_pass", recording)
    return passes


def test_scores_are_the_mean_over_the_chosen_draws_and_pilot_samples_are_not_scored_twice(small_problem, monkeypatch):
    """With a pilot of 30 samples the scorer keeps K* draws; every score equals the mean of the first K*
    per-draw scores of a scorer that always uses all draws (same frame of K draws)."""
    from influencegate.influence import scorer as scorer_module

    model, data = small_problem
    monkeypatch.setattr(scorer_module, "PILOT_SAMPLES", 30)
    config = InfluenceConfig(draws=24, batch_size=16, progress=False, target_stability=0.5)
    adaptive = InfluenceScorer(model, config).fit(data)
    assert adaptive.score_draws == 16 and set(adaptive.draw_predictions) == set(adaptive.draw_quantiles) == {16}
    assert 0.5 <= adaptive.draw_quantiles[16] <= adaptive.draw_predictions[16]
    _, _, info = score_dataset(data, model, config)  # what the audit logs (draws.predicted_stability*)
    assert info["score_draws"] == 16 and info["predicted_stability"] == pytest.approx(adaptive.draw_predictions[16])
    assert info["predicted_stability_q10"] == pytest.approx(adaptive.draw_quantiles[16])
    said = pilot_says(info, 0.5)  # what `influencegate score` prints after the draws
    assert said.startswith(" (chosen by the draws pilot")
    assert f"{info['predicted_stability']:.3f} expected, {info['predicted_stability_q10']:.3f} or more" in said
    assert "below the target 0.99" in pilot_says({**info, "predicted_stability_q10": 0.9}, 0.99)
    assert pilot_says({**info, "predicted_stability": float("nan")}, 0.5) == pilot_says(info, None) == ""
    scored_ids = []
    original = adaptive._draw_scores

    def counting(dataset, draws, desc):
        for ids, k, values in original(dataset, draws, desc):
            if k == 0:
                scored_ids.extend(ids)
            yield ids, k, values

    monkeypatch.setattr(adaptive, "_draw_scores", counting)
    table = adaptive.score(data)
    assert scored_ids == data.sample_ids[30:]  # the pilot's 30 samples came from its cache

    full = InfluenceScorer(model, replace(config, target_stability=None)).fit(data)
    per_draw = {}
    for ids, k, values in full._draw_scores(data, 24, "reference"):
        for sid, value in zip(ids, values):
            per_draw.setdefault(sid, [0.0] * 24)[k] = value
    expected = [np.mean(per_draw[sid][:16]) for sid in data.sample_ids]
    assert table["sample_id"].tolist() == data.sample_ids
    np.testing.assert_allclose(table["influence"], expected, rtol=1e-5)


def test_the_pilot_reuses_the_fit_draws_and_gives_what_its_own_pass_gives(small_problem, monkeypatch):
    """A pilot of 30 samples (a step of 16 and part of the next) with fit_draws 8 of 24 takes draws 0-7 from
    the curvature pass and passes over draws 8-23 only; its per-draw scores, the chosen draws and the scores
    equal those of the pilot's own pass over all 24 draws (stash refused by a zero budget)."""
    from influencegate.influence import scorer as scorer_module

    model, data = small_problem
    monkeypatch.setattr(scorer_module, "PILOT_SAMPLES", 30)
    config = InfluenceConfig(draws=24, fit_draws=8, batch_size=16, draws_per_pass=5, progress=False,
                             target_stability=0.5)
    passes = record_passes(monkeypatch)
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


def test_the_default_pilot_is_the_first_of_the_spread_fitted_samples_and_needs_no_pass_of_its_own(small_problem,
                                                                                                   monkeypatch):
    """Default rule: the curvature takes all 24 draws of 40 of the 80 samples, spread over them; the pilot (30
    samples) is the first 30 of those and scores the curvature pass's rows, so fit makes one pass only; score
    passes over the 50 others, and every score equals the mean of the first K* per-draw scores."""
    from influencegate.influence import config as config_module
    from influencegate.influence import scorer as scorer_module
    from influencegate.influence.fit_samples import spread_indices

    model, data = small_problem
    monkeypatch.setattr(scorer_module, "PILOT_SAMPLES", 30)
    monkeypatch.setattr(config_module, "FIT_ROWS_PER_DIM", 40 * 24 / 128)  # D = 4 x 32 (the Linear layer)
    config = InfluenceConfig(draws=24, batch_size=16, draws_per_pass=5, progress=False, target_stability=0.5)
    passes = record_passes(monkeypatch)
    adaptive = InfluenceScorer(model, config).fit(data)
    fitted = [data.sample_ids[i] for i in spread_indices(80, 40)]
    assert passes == [("curvature", 0, 40)] and adaptive.fit_draws == 24
    assert list(adaptive._pilot) == fitted[:30]
    table = adaptive.score(data)
    assert passes[1:] == [("score", 0, 50)]
    reference = InfluenceScorer(model, config)
    restore_fit(reference, fit_state(adaptive))  # the same curvature, all per-draw scores from one pass
    per_draw = {}
    for ids, k, values in reference._draw_scores(data, 24, "reference"):
        for sid, value in zip(ids, values):
            per_draw.setdefault(sid, [0.0] * 24)[k] = value
    chosen = adaptive.score_draws
    np.testing.assert_allclose(table["influence"], [np.mean(per_draw[sid][:chosen]) for sid in data.sample_ids],
                               rtol=1e-5)


def test_the_chosen_draws_survive_a_restored_fit(small_problem, monkeypatch):
    from influencegate.influence import scorer as scorer_module

    model, data = small_problem
    monkeypatch.setattr(scorer_module, "PILOT_SAMPLES", 30)
    config = InfluenceConfig(draws=24, batch_size=16, progress=False, target_stability=0.5)
    fitted = InfluenceScorer(model, config).fit(data)
    restored = InfluenceScorer(model, config)
    restore_fit(restored, fit_state(fitted))
    assert restored.score_draws == fitted.score_draws == 16
    np.testing.assert_allclose(restored.score(data)["influence"], fitted.score(data)["influence"], rtol=1e-5)


def test_few_draws_need_no_pilot_and_bad_targets_are_refused(small_problem):
    model, data = small_problem
    scorer = InfluenceScorer(model, InfluenceConfig(draws=8, batch_size=16, progress=False)).fit(data)
    assert scorer.score_draws == 8 and scorer.draw_predictions == {}
    for bad in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="target_stability"):
            InfluenceConfig(target_stability=bad)


def test_cli_takes_a_target_or_none_and_refuses_others_in_one_line(tmp_path, capsys):
    from influencegate.cli import main

    for bad in ("1.5", "0", "often"):
        assert main(["score", "digits", "--pretrain", "simclr", "--epochs", "1", "--target-stability", bad]) == 2
        err = capsys.readouterr().err
        assert "--target-stability" in err and err.count("\n") == 1
    out = tmp_path / "s.parquet"
    assert main(["score", "digits", "--pretrain", "simclr", "--epochs", "1", "--draws", "2", "--rank", "4",
                 "--target-stability", "none", "--no-findings", "--out", str(out)]) == 0
    assert out.is_file()
