"""The scorer against independent references: separately projected exact gradients, the exact damped
Fisher, and finite differences of the objective."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from influencegate import InfluenceConfig, InfluenceScorer, exact_self_influence
from influencegate.data import ImageDataset
from influencegate.influence import per_sample_gradients
from influencegate.influence.capture import ssl_distance
from influencegate.influence.layers import random_projectors, tracked_layers
from influencegate.influence.perturb import make_perturbation


def tiny_mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 6)).double()


def tiny_cnn() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5)).double()


MODELS = {"mlp": tiny_mlp, "cnn": tiny_cnn}


@pytest.fixture(scope="module")
def tiny_data() -> ImageDataset:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(36, 1, 4, 4, generator=gen, dtype=torch.float64)
    return ImageDataset.from_tensors(images, [f"img{i:02d}" for i in range(36)])


def config(**overrides) -> InfluenceConfig:
    base = dict(precision="fp64", draws=2, batch_size=10, progress=False, sigma=0.3)
    base.update(overrides)
    return InfluenceConfig(**base)


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_identity_curvature_is_squared_norm_of_separately_projected_gradients(model_name, tiny_data):
    model = MODELS[model_name]()
    cfg = config(curvature="identity", rank=3)
    table = InfluenceScorer(model, cfg).fit(tiny_data).score(tiny_data)

    ex = per_sample_gradients(model, tiny_data, cfg)
    projectors = random_projectors(tracked_layers(model), cfg.rank, cfg.projection_seed)
    expected = np.zeros(len(ex.sample_ids))
    for name, block in ex.blocks.items():
        proj = projectors[name]
        assert proj.p_in is not None or proj.p_out is not None  # rank 3 really projects something here
        full = ex.g[:, :, block].reshape(len(ex.sample_ids), cfg.draws, proj.module.weight.shape[0], -1)
        p_out = proj.p_out if proj.p_out is not None else torch.eye(full.shape[2], dtype=torch.float64)
        p_in = proj.p_in if proj.p_in is not None else torch.eye(full.shape[3], dtype=torch.float64)
        projected = p_out @ full @ p_in.T
        expected += projected.pow(2).sum(dim=(2, 3)).mean(1).numpy()
    np.testing.assert_allclose(table["influence"].to_numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("damping", [1e-3, 0.5])
def test_raw_curvature_without_projection_equals_exact_block_diagonal(model_name, damping, tiny_data):
    model = MODELS[model_name]()
    cfg = config(curvature="raw", projection="identity", damping=damping)
    ours = InfluenceScorer(model, cfg).fit(tiny_data).score(tiny_data)["influence"].to_numpy()
    exact = exact_self_influence(model, tiny_data, cfg, block_diagonal=True)["influence"].to_numpy()
    assert np.max(np.abs(ours - exact) / np.abs(exact)) <= 1e-5


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_heuristic_damping_matches_exact_block_diagonal(model_name, tiny_data):
    model = MODELS[model_name]()
    cfg = config(curvature="raw", projection="identity", damping=None)
    ours = InfluenceScorer(model, cfg).fit(tiny_data).score(tiny_data)["influence"].to_numpy()
    exact = exact_self_influence(model, tiny_data, cfg, block_diagonal=True)["influence"].to_numpy()
    np.testing.assert_allclose(ours, exact, rtol=1e-8)


def closed_form_raw(g: np.ndarray, fit_rows: np.ndarray, lam: float, inverse_rank: int | None) -> np.ndarray:
    """Per sample, the mean over all K draws of g^T M g for one layer: g N x K x D, M the exact damped inverse of
    H = fit_rows^T fit_rows / rows, or its top-m eigenpairs plus one weight for the other directions,
    sum e/(e + lambda) / sum e over them."""
    evals, evecs = np.linalg.eigh(fit_rows.T @ fit_rows / len(fit_rows))
    evals = np.clip(evals, 0, None)
    m = len(evals) if inverse_rank is None else min(inverse_rank, len(evals))
    rest = evals[: len(evals) - m]
    weights = np.full(len(evals), (rest / (rest + lam)).sum() / rest.sum() if m < len(evals) else 0.0)
    weights[len(evals) - m:] = 1.0 / (evals[len(evals) - m:] + lam)
    assert inverse_rank is None or m < len(evals)  # the low rank really truncates every layer here
    return ((g @ evecs) ** 2 * weights).sum(2).mean(1)


@pytest.mark.parametrize("inverse_rank", [2, 5, None])
@pytest.mark.parametrize("draws_per_pass", [None, 2])
def test_low_rank_inverse_and_fit_draws_match_their_closed_form(inverse_rank, draws_per_pass, tiny_data):
    """H_l from the first fit_draws draws of every sample's exact gradients; score = mean over all K draws of
    sum_l g^T M_l g (`closed_form_raw`). draws_per_pass 2: passes of 2, 1 draws (fit) and 2, 2, 1 (score), a
    pass shorter than the one before it (its x-branch holds fewer copies of the batch)."""
    model, lam = tiny_cnn(), 0.05
    cfg = config(curvature="raw", projection="identity", damping=lam, draws=5, fit_draws=3, inverse_rank=inverse_rank,
                 draws_per_pass=draws_per_pass)
    ours = InfluenceScorer(model, cfg).fit(tiny_data).score(tiny_data)["influence"].to_numpy()
    ex = per_sample_gradients(model, tiny_data, cfg)
    expected = np.zeros(len(ex.sample_ids))
    for block in ex.blocks.values():
        g = ex.g[:, :, block].numpy()  # N x K x D
        expected += closed_form_raw(g, g[:, :3].reshape(-1, g.shape[2]), lam, inverse_rank)
    np.testing.assert_allclose(ours, expected, rtol=1e-9)


@pytest.mark.parametrize("inverse_rank", [5, None])
def test_default_fit_takes_all_draws_of_spread_samples_as_its_closed_form(inverse_rank, tiny_data, monkeypatch):
    """fit_draws None: H_l from all K draws of the n_fit samples spread over the dataset (n_fit x K >= rows x D,
    here 0.5 rows per dimension of the largest layer, D = 6 x 36: 22 samples, capped at half of the 36 small
    dataset's: 18); every sample is scored with all K draws under it."""
    from influencegate.influence import config as config_module
    from influencegate.influence.fit_samples import spread_indices

    monkeypatch.setattr(config_module, "FIT_ROWS_PER_DIM", 0.5)
    model, lam = tiny_cnn(), 1e-9  # of the order of H's eigenvalues here, so that H shapes the scores
    cfg = config(curvature="raw", projection="identity", damping=lam, draws=5, inverse_rank=inverse_rank)
    scorer = InfluenceScorer(model, cfg).fit(tiny_data)
    assert scorer.fit_draws == 5 and scorer.fit_share == pytest.approx(18 / 36)
    ours = scorer.score(tiny_data)["influence"].to_numpy()
    ex = per_sample_gradients(model, tiny_data, cfg)
    fitted = spread_indices(36, 18)
    expected, every_sample = np.zeros(len(ex.sample_ids)), np.zeros(len(ex.sample_ids))
    for block in ex.blocks.values():
        g = ex.g[:, :, block].numpy()  # N x K x D
        expected += closed_form_raw(g, g[fitted].reshape(-1, g.shape[2]), lam, inverse_rank)
        every_sample += closed_form_raw(g, g.reshape(-1, g.shape[2]), lam, inverse_rank)
    np.testing.assert_allclose(ours, expected, rtol=1e-7)
    assert np.max(np.abs(every_sample / expected - 1)) > 0.01  # a fit of every sample would not pass


def test_the_default_fits_all_draws_of_32_rows_per_dimension_and_at_least_the_pilot_but_half_a_small_dataset():
    cfg = InfluenceConfig(draws=64)
    assert cfg.curvature_draws() == 64
    assert cfg.curvature_samples(1797, 1024) == 512  # ceil(32 * 1024 / 64)
    assert cfg.curvature_samples(1797, 1024, pilot=512) == 512
    assert cfg.curvature_samples(1797, 256, pilot=512) == 512  # 128 would do; the pilot's samples are fitted
    assert cfg.curvature_samples(1797, 256) == 128
    assert cfg.curvature_samples(10**6, 4096, pilot=512) == 2048
    # a small dataset: at most half of its samples, down to half of the rows (16 per dimension)
    assert cfg.curvature_samples(1024, 1024, pilot=512) == 512
    assert cfg.curvature_samples(600, 1024, pilot=512) == 300
    assert cfg.curvature_samples(300, 1024, pilot=512) == 256
    assert cfg.curvature_samples(200, 1024, pilot=512) == 200  # capped at N
    assert cfg.curvature_samples(600, 256, pilot=512) == 300  # the pilot is cut too
    assert InfluenceConfig(draws=16).curvature_samples(10**5, 1024) == 2048
    explicit = InfluenceConfig(draws=64, fit_draws=8)  # an integer: the first 8 draws of every sample
    assert explicit.curvature_draws() == 8 and explicit.curvature_samples(600, 1024, pilot=512) == 600
    assert InfluenceConfig(draws=4, fit_draws=8).curvature_draws() == 4


def test_spread_indices_cover_the_dataset_evenly():
    from influencegate.influence.fit_samples import share_count, spread_indices

    for length, count in [(1797, 512), (600, 512), (36, 22), (10, 1), (10, 2), (7, 7), (5, 9)]:
        picked = spread_indices(length, count)
        assert len(picked) == min(length, count) and picked == sorted(set(picked))
        assert picked[0] == 0 and (count < 2 or picked[-1] == length - 1)
        gaps = np.diff(picked)
        assert len(gaps) == 0 or gaps.max() - gaps.min() <= 1
    assert spread_indices(10, 0) == []
    assert share_count(512 / 1797, 1797) == 512 and share_count(0.001, 10) == 1 and share_count(0.5, 0) == 0


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_objective_gradient_matches_finite_differences(model_name, tiny_data):
    model = MODELS[model_name]()
    cfg = config(draws=1)
    ex = per_sample_gradients(model, tiny_data, cfg)
    perturb = make_perturbation(cfg.perturbation, cfg.sigma, cfg.draws, cfg.seed, cfg.noise)
    sid, x = tiny_data[3]
    x = x.unsqueeze(0).double()
    x_hat = perturb(x, [sid], 0)
    gen = torch.Generator().manual_seed(5)
    step = 1e-6
    for name, block in ex.blocks.items():
        weight = model.get_submodule(name).weight
        for _ in range(3):
            idx = tuple(int(torch.randint(0, s, (1,), generator=gen)) for s in weight.shape)
            with torch.no_grad():
                original = weight[idx].item()
                weight[idx] = original + step
                up = ssl_distance(model(x), model(x_hat)).item()
                weight[idx] = original - step
                down = ssl_distance(model(x), model(x_hat)).item()
                weight[idx] = original
            flat_index = np.ravel_multi_index(idx, weight.shape)
            analytic = ex.g[3, 0, block][flat_index].item()
            assert analytic == pytest.approx((up - down) / (2 * step), rel=1e-5, abs=1e-9)


def test_hook_gradients_match_exact_gradients(tiny_data):
    """identity projection + identity curvature = sum of squared full gradients (two uses summed)."""
    model = tiny_cnn()
    cfg = config(curvature="identity", projection="identity")
    ours = InfluenceScorer(model, cfg).fit(tiny_data).score(tiny_data)["influence"].to_numpy()
    ex = per_sample_gradients(model, tiny_data, cfg)
    np.testing.assert_allclose(ours, ex.g.pow(2).sum(2).mean(1).numpy(), rtol=1e-10)


def test_diagonal_and_ekfac_statistics_equal_the_exact_fisher(tiny_data):
    """Diagonal: diag(H_l). EKFAC: diag of H_l in the Kronecker eigenbasis, (Q_S x Q_A)^T H_l (Q_S x Q_A)."""
    model = tiny_cnn()
    ex = per_sample_gradients(model, tiny_data, config())
    m = ex.g.shape[0] * ex.g.shape[1]
    diagonal = InfluenceScorer(model, config(curvature="diagonal", projection="identity")).fit(tiny_data)
    ekfac = InfluenceScorer(model, config(curvature="ekfac", projection="identity")).fit(tiny_data)
    for name, block in ex.blocks.items():
        g = ex.g[:, :, block].reshape(m, -1)
        h = g.T @ g / m
        diag = diagonal.curvature[name]
        np.testing.assert_allclose(diag.sq_sum.reshape(-1) / diag.count, torch.diagonal(h), rtol=1e-9)
        curv = ekfac.curvature[name]
        basis = torch.kron(curv.q_s, curv.q_a)
        expected = torch.diagonal(basis.T @ h @ basis)
        np.testing.assert_allclose(curv.eigenvalues().reshape(-1), expected, rtol=1e-8, atol=1e-14)


def test_scores_table_contract(tiny_data):
    table = InfluenceScorer(tiny_cnn(), config()).fit(tiny_data).score(tiny_data)
    assert list(table.columns[:6]) == ["sample_id", "path", "influence", "log_influence", "influence_rank",
                                       "influence_percentile"]
    assert table.columns[-1] == "error"
    assert (table["influence"] > 0).all()
    np.testing.assert_allclose(np.exp(table["log_influence"]), table["influence"], rtol=1e-12)
    top = table.loc[table["influence"].idxmax()]
    assert top["influence_rank"] == 1 and top["influence_percentile"] == 100.0
    assert sorted(table["influence_rank"]) == list(range(1, len(table) + 1))


def test_fit_and_score_see_the_same_perturbation_whatever_the_batching(tiny_data):
    model = tiny_cnn()
    a = InfluenceScorer(model, config(batch_size=7)).fit(tiny_data).score(tiny_data)
    b = InfluenceScorer(model, config(batch_size=36)).fit(tiny_data).score(tiny_data)
    np.testing.assert_allclose(a["influence"], b["influence"], rtol=1e-9)


def test_bf16_autocast_scores_follow_fp32(digits):
    """bf16 autocast runs the forward passes in bf16 while the captured statistics stay fp32 (the hooks run
    inside the autocast region); the ranking follows fp32's. tests/test_cuda.py checks the same on CUDA."""
    from scipy.stats import spearmanr

    from influencegate.models import SmallCNN

    torch.manual_seed(0)
    model = SmallCNN(in_channels=1)
    data = digits.subset(digits.sample_ids[:200])
    fp32, bf16 = (InfluenceScorer(model, config(precision=p, draws=4, batch_size=64)).fit(data).score(data)
                  for p in ("fp32", "bf16"))
    assert fp32["sample_id"].tolist() == bf16["sample_id"].tolist()
    assert spearmanr(fp32["influence"], bf16["influence"]).statistic >= 0.95


def test_bad_input_gives_clear_errors(tiny_data):
    with pytest.raises(ValueError, match="curvature must be one of"):
        InfluenceConfig(curvature="newton")
    with pytest.raises(ValueError, match="unknown perturbation"):
        InfluenceScorer(tiny_cnn(), config(perturbation="rotate"))
    with pytest.raises(ValueError, match="unknown layer"):
        InfluenceScorer(tiny_cnn(), config(), layers=["nope"])
    with pytest.raises(RuntimeError, match="call fit"):
        InfluenceScorer(tiny_cnn(), config()).score(tiny_data)
    with pytest.raises(ValueError, match="no readable sample"):
        InfluenceScorer(tiny_cnn(), config()).fit(tiny_data.subset([]))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            InfluenceScorer(tiny_cnn(), config(device="cuda"))


@pytest.mark.parametrize("noise", ["common", "orthogonal", "iid"])
def test_noise_modes(noise):
    """common: the same draw for every sample; common/orthogonal: a sample's K draws are orthogonal;
    every mode: deterministic per (seed, sample id, draw), roughly N(0, sigma^2) per pixel."""
    perturb = make_perturbation("gaussian", sigma=1.0, draws=4, seed=3, noise=noise)
    images = torch.zeros(3, 1, 16, 16)
    draws = torch.stack([perturb(images, ["a", "b", "c"], k) for k in range(4)], dim=1).reshape(3, 4, -1)
    again = perturb(images[1:2], ["b"], 2).reshape(-1)
    np.testing.assert_array_equal(draws[1, 2], again)
    gram = draws[0] @ draws[0].T
    off_diagonal = (gram - torch.diag(torch.diagonal(gram))).abs().max().item()
    if noise == "iid":
        assert off_diagonal > 1.0
    else:
        assert off_diagonal < 1e-3
    assert torch.equal(draws[0], draws[1]) == (noise == "common")
    assert 0.7 < draws.std().item() < 1.3


@pytest.mark.parametrize("curvature", ["diagonal", "raw"])
def test_curvature_fitted_on_shards_and_merged_equals_one_fit(curvature, tiny_data):
    """Curvature statistics are sums and counts: two shards fitted apart and merged give the full fit."""
    model = tiny_cnn()
    cfg = config(curvature=curvature)
    full = InfluenceScorer(model, cfg).fit(tiny_data)
    ids = tiny_data.sample_ids
    first = InfluenceScorer(model, cfg).fit(tiny_data.subset(ids[:13]))
    second = InfluenceScorer(model, cfg).fit(tiny_data.subset(ids[13:]))
    for name, curv in first.curvature.items():
        curv.merge(second.curvature[name])
        curv.finalize(cfg.damping)
    np.testing.assert_allclose(first.score(tiny_data)["influence"], full.score(tiny_data)["influence"], rtol=1e-9)


def _reference_augment(image: torch.Tensor, u: list[float], part: str) -> torch.Tensor:
    """One image, one part, written plainly with Python floats, F.interpolate and F.conv2d (the independent
    reference of the batched augmentations); u: the part's uniforms (3 for crop, 2 for jitter, else 1)."""
    c, h, w = image.shape
    if part == "crop":
        scale = 0.5 + 0.5 * u[0]
        ch, cw = max(1, round(h * math.sqrt(scale))), max(1, round(w * math.sqrt(scale)))
        top, left = math.floor(u[1] * (h - ch + 1)), math.floor(u[2] * (w - cw + 1))
        patch = image[:, top:top + ch, left:left + cw].unsqueeze(0)
        return F.interpolate(patch, size=(h, w), mode="bilinear", align_corners=False).squeeze(0)
    if part == "jitter":
        brightness, contrast = 0.8 * (u[0] - 0.5), 1.0 + 0.8 * (u[1] - 0.5)
        return (image - image.mean()) * contrast + image.mean() + brightness
    if part == "flip":
        return image.flip(-1) if u[0] < 0.5 else image
    if part == "grayscale":
        return image.mean(dim=0, keepdim=True).expand_as(image) if u[0] < 0.2 else image
    k1 = torch.tensor([0.25, 0.5, 0.25])
    kernel = (k1[:, None] * k1[None, :]).expand(c, 1, 3, 3)
    return F.conv2d(image.unsqueeze(0), kernel, padding=1, groups=c).squeeze(0) if u[0] < 0.5 else image


@pytest.mark.parametrize("spec", ["crop", "flip", "jitter", "grayscale", "blur", "crop+flip+jitter+grayscale+blur",
                                  "gaussian+crop+blur"])
def test_batched_augmentations_match_the_per_image_reference(spec):
    """Non-Gaussian perturbations transform the whole batch at once; each image must come out as the plain
    per-image computation with its own (seed, sample id, draw) generator gives it (H != W checks the axes)."""
    from influencegate.influence.perturb import sample_generator

    images = torch.randn(12, 3, 9, 7, generator=torch.Generator().manual_seed(0))
    ids = [f"s{i}" for i in range(12)]
    perturb = make_perturbation(spec, sigma=0.3, draws=3, seed=5, noise="orthogonal")
    noise = make_perturbation("gaussian", sigma=0.3, draws=3, seed=5, noise="orthogonal")
    changed = 0
    for draw in range(3):
        out = perturb(images, ids, draw)
        gaussian = noise(torch.zeros_like(images), ids, draw)  # the same Gaussian draw, alone
        for i, sid in enumerate(ids):
            parts = spec.split("+")
            counts = [{"crop": 3, "jitter": 2}.get(part, 1) for part in parts if part != "gaussian"]
            uniforms = torch.rand(sum(counts), generator=sample_generator(5, sid, salt=f"draw{draw}"),
                                  dtype=torch.float64).tolist()
            x = images[i]
            for part in parts:
                if part == "gaussian":
                    x = x + gaussian[i]
                else:
                    x = _reference_augment(x, uniforms[:counts[0]], part)
                    uniforms, counts = uniforms[counts[0]:], counts[1:]
            torch.testing.assert_close(out[i], x, rtol=1e-5, atol=1e-5)
            changed += not torch.equal(out[i], images[i])
    assert changed >= 5  # of 36 images x draws; the comparison is not vacuous


def test_a_part_named_twice_is_an_error():
    with pytest.raises(ValueError, match="names a part twice"):
        make_perturbation("flip+flip", sigma=0.1, draws=2, seed=0, noise="iid")


@pytest.mark.parametrize("curvature, projection", [("raw", "random"), ("ekfac", "pca")])
def test_sharded_resumable_scoring_equals_one_score_and_resumes_after_a_crash(curvature, projection, tiny_data,
                                                                             tmp_path):
    """score_resumable writes the fit and every shard; a run killed after two shards resumes with them, and
    a lost shard is recomputed; the table equals one fit + score."""
    from influencegate.influence import score_resumable

    model, cfg = tiny_cnn(), config(curvature=curvature, projection=projection, rank=3)
    expected = InfluenceScorer(model, cfg).fit(tiny_data).score(tiny_data)

    crashing = InfluenceScorer(model, cfg)
    calls = {"n": 0}
    original = crashing.influence

    def dies_on_the_third_shard(dataset):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("the machine went away")
        return original(dataset)

    crashing.influence = dies_on_the_third_shard
    with pytest.raises(KeyboardInterrupt):
        score_resumable(crashing, tiny_data, tmp_path, shard_size=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curvature.pt", "run.json", "shard-00000.npz",
                                                          "shard-00001.npz"]

    table, info = score_resumable(InfluenceScorer(model, cfg), tiny_data, tmp_path, shard_size=10)
    assert info == {"shards": 4, "shards_reused": 2, "fit_reused": 1}
    pd.testing.assert_frame_equal(table, expected, check_exact=False, rtol=1e-9)

    (tmp_path / "shard-00001.npz").unlink()
    table, info = score_resumable(InfluenceScorer(model, cfg), tiny_data, tmp_path, shard_size=10)
    assert info == {"shards": 4, "shards_reused": 3, "fit_reused": 1}
    pd.testing.assert_frame_equal(table, expected, check_exact=False, rtol=1e-9)


def test_resumable_scoring_refuses_a_directory_of_another_run(tiny_data, tmp_path):
    from influencegate.influence import score_resumable

    score_resumable(InfluenceScorer(tiny_cnn(), config()), tiny_data, tmp_path, shard_size=18)
    with pytest.raises(ValueError, match="another config"):
        score_resumable(InfluenceScorer(tiny_cnn(), config(seed=1)), tiny_data, tmp_path, shard_size=18)
    other = tiny_cnn()
    with torch.no_grad():
        other[0].weight.add_(0.01)
    with pytest.raises(ValueError, match="another encoder_sha256"):
        score_resumable(InfluenceScorer(other, config()), tiny_data, tmp_path, shard_size=18)
    with pytest.raises(ValueError, match="another n_samples, sample_ids_sha256"):
        score_resumable(InfluenceScorer(tiny_cnn(), config()), tiny_data.subset(tiny_data.sample_ids[:20]), tmp_path)
    with pytest.raises(ValueError, match="shard_size must be >= 1"):
        score_resumable(InfluenceScorer(tiny_cnn(), config()), tiny_data, tmp_path / "new", shard_size=0)
    # device and progress do not change a score: the same run may resume with them changed
    _, info = score_resumable(InfluenceScorer(tiny_cnn(), config(progress=True)), tiny_data, tmp_path, shard_size=18)
    assert info["shards_reused"] == 2


def test_rank_parts_cover_the_samples_once_in_order_and_need_a_process_group(tiny_data):
    from influencegate.influence.distributed import rank_part, score_distributed

    ids = [f"s{i}" for i in range(11)]
    parts = [rank_part(ids, rank, 4) for rank in range(4)]
    assert sum(parts, []) == ids and sorted(len(p) for p in parts) == [2, 3, 3, 3]
    with pytest.raises(RuntimeError, match="initialised torch.distributed process group"):
        score_distributed(InfluenceScorer(tiny_cnn(), config()), tiny_data)
