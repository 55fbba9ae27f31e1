"""The ratio estimator (InfluenceConfig.estimator = "ratio", influence.control) against its closed form from exact
per-sample gradients and a direct forward pass, the pilot's simulation of it, and its config."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import Subset

from influencegate import InfluenceConfig, InfluenceScorer
from influencegate.data import ImageDataset
from influencegate.influence import per_sample_gradients
from influencegate.influence.capture import ssl_distance
from influencegate.influence.perturb import make_perturbation
from influencegate.influence.resume import run_fingerprint
from influencegate.influence.stability import choose_draws


def tiny_cnn() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4)).double()


@pytest.fixture(scope="module")
def data() -> ImageDataset:
    images = torch.randn(30, 1, 5, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    return ImageDataset.from_tensors(images, [f"s{i:02d}" for i in range(30)])


def config(**overrides) -> InfluenceConfig:
    base = dict(precision="fp64", draws=6, batch_size=7, progress=False, sigma=0.3, curvature="raw",
                projection="identity", damping=0.05, fit_draws=6, inverse_rank=None, target_stability=None,
                estimator="ratio")
    base.update(overrides)
    return InfluenceConfig(**base)


def closed_form(model: nn.Module, data: ImageDataset, cfg: InfluenceConfig, scored: int) -> np.ndarray:
    """mean_{k<scored} s_k x mean_{k<K} d_k / mean_{k<scored} d_k per sample: s_k = sum over layers of
    g_k^T (H + lambda I)^-1 g_k from exact per-sample gradients (H from every sample's K draws), d_k from a
    forward pass of the image and of its k-th perturbation."""
    ex = per_sample_gradients(model, data, cfg)
    s = np.zeros(ex.g.shape[:2])
    for block in ex.blocks.values():
        g = ex.g[:, :, block].numpy()  # N x K x D
        rows = g.reshape(-1, g.shape[2])
        inverse = np.linalg.inv(rows.T @ rows / len(rows) + cfg.damping * np.eye(g.shape[2]))
        s += np.einsum("nkd,de,nke->nk", g, inverse, g)
    perturb = make_perturbation(cfg.perturbation, cfg.sigma, cfg.draws, cfg.seed, cfg.noise)
    x, ids = data.images.double(), list(data.sample_ids)
    with torch.no_grad():
        d = torch.stack([ssl_distance(model(x), model(perturb(x, ids, k).to(x.dtype)), cfg.objective)
                         for k in range(cfg.draws)], dim=1).numpy()
    return s[:, :scored].mean(1) * d.mean(1) / d[:, :scored].mean(1)


@pytest.mark.parametrize("scored", [2, 6])
def test_ratio_scores_equal_their_closed_form(data, scored):
    """2 of 6 draws scored (as a pilot may choose): the closed form, and not the plain mean of those 2 draws;
    all 6 scored: the plain mean itself."""
    model, cfg = tiny_cnn(), config()
    scorer = InfluenceScorer(model, cfg).fit(data)
    scorer.score_draws = scored  # what the draws pilot chooses under a target_stability
    ours = scorer.score(data)["influence"].to_numpy()
    np.testing.assert_allclose(ours, closed_form(model, data, cfg, scored), rtol=1e-8)
    plain = scorer_mean(model, data, cfg, scored)
    if scored < cfg.draws:
        assert np.median(np.abs(ours / plain - 1)) > 0.01  # the factor really corrects here
    else:
        np.testing.assert_allclose(ours, plain, rtol=1e-12)


def scorer_mean(model: nn.Module, data: ImageDataset, cfg: InfluenceConfig, scored: int) -> np.ndarray:
    """The plain estimator's scores of the first `scored` draws under the same fit."""
    scorer = InfluenceScorer(model, replace(cfg, estimator="mean")).fit(data)
    scorer.score_draws = scored
    return scorer.score(data)["influence"].to_numpy()


def test_the_pilot_keeps_fewer_draws_when_the_objective_explains_their_luck():
    """Synthetic records under common noise: draw k moves sample n's objective by its own loading a_n on a
    shared z_k, d_nk = exp(a_n z_k + small), and s_nk = u_n d_nk x noise. The plain mean needs more than 16 draws
    for 0.95 between simulated seeds; the ratio estimator (each simulated seed with a control frame of its own)
    reaches it at 16."""
    rng = np.random.default_rng(0)
    n, k = 400, 64
    u = np.exp(0.3 * rng.normal(size=(n, 1)))
    a = rng.uniform(0.16, 0.8, size=(n, 1))

    def objective() -> np.ndarray:  # one frame of k common draws
        return np.exp(a * rng.normal(size=(1, k)) + 0.05 * rng.normal(size=(n, k)))

    d = objective()
    s = u * d * np.exp(0.1 * rng.normal(size=(n, k)))
    controls = np.stack([objective().mean(axis=1) for _ in range(2)], axis=1)
    plain, _, _ = choose_draws(s, 0.95)
    ratio, expected, _ = choose_draws(s, 0.95, objective=d, controls=controls)
    assert ratio == 16 and expected[16] > 0.95
    assert plain > 16


def test_pilot_samples_score_as_the_streaming_pass_does(data):
    """With a pilot (a low target, so that it keeps 16 of 32 draws) the pilot's samples are scored from its
    kept per-draw scores and objective; scored again through the passes (a Subset has no sample ids to look
    up) they get the same values."""
    model = tiny_cnn()
    cfg = config(draws=32, fit_draws=None, target_stability=0.01)
    scorer = InfluenceScorer(model, cfg).fit(data)
    assert scorer.score_draws == 16 and scorer._pilot_objective
    cached = scorer.score(data).set_index("sample_id")["influence"]
    pilot_ids = list(scorer._pilot)
    rows = [data.sample_ids.index(sid) for sid in pilot_ids]
    _, streamed = scorer.influence(Subset(data, rows))
    np.testing.assert_allclose(cached.loc[pilot_ids].to_numpy(), streamed, rtol=1e-9)


def test_config_and_fingerprint():
    with pytest.raises(ValueError, match="estimator must be one of"):
        InfluenceConfig(estimator="median")
    with pytest.raises(ValueError, match="needs a named perturbation"):
        InfluenceConfig(estimator="ratio", perturbation=lambda x, ids: x)
    model = tiny_cnn()
    plain = run_fingerprint(InfluenceScorer(model, config(estimator="mean")), [], 1)["config"]
    ratio = run_fingerprint(InfluenceScorer(model, config()), [], 1)["config"]
    assert "estimator" not in plain  # directories kept before the field existed still resume
    assert ratio["estimator"] == "ratio"
