"""Tests of influencegate.models: encoders, checkpoints, SSL losses, augmentations, the trainer."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from influencegate.data import load_images
from influencegate.models import (
    AugmentConfig,
    SmallCNN,
    augment,
    barlow_twins_loss,
    build_encoder,
    byol_loss,
    cifar_resnet18,
    default_augment_config,
    load_encoder,
    pretrain,
    save_encoder,
    simclr_loss,
)


@pytest.mark.parametrize("size", [8, 32])
def test_small_cnn_shapes_and_size(size: int) -> None:
    model = SmallCNN(in_channels=1)
    assert model(torch.randn(4, 1, size, size)).shape == (4, 32)
    assert 6000 < sum(p.numel() for p in model.parameters()) < 8000
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_cifar_resnet18_outputs_512() -> None:
    model = cifar_resnet18().eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity) and isinstance(model.fc, torch.nn.Identity)


def test_solo_learn_checkpoint_loads(tmp_path: Path) -> None:
    source = cifar_resnet18()
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    state["projector.0.weight"] = torch.randn(8, 512)
    state["classifier.weight"] = torch.randn(10, 512)
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "solo.ckpt")
    loaded = load_encoder(tmp_path / "solo.ckpt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), source.eval()(x), atol=1e-5)
    del state["backbone.layer4.1.bn2.weight"]
    torch.save({"state_dict": state}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="missing keys.*layer4.1.bn2.weight"):
        load_encoder(tmp_path / "bad.ckpt")


def test_own_checkpoint_round_trip(tmp_path: Path) -> None:
    model = SmallCNN(in_channels=3, widths=(4, 8, 16), embed_dim=10)
    path = save_encoder(model, tmp_path / "enc.pt", "small_cnn", {"in_channels": 3, "widths": [4, 8, 16], "embed_dim": 10},
                        {"method": "simclr", "losses": [1.5, 1.2], "dataset": {"name": "digits", "version": "abc"}})
    raw = torch.load(path, weights_only=True)
    assert raw["arch"] == "small_cnn" and raw["meta"]["dataset"]["version"] == "abc"
    loaded = load_encoder(path)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    with pytest.raises(ValueError, match="primitive"):
        save_encoder(model, tmp_path / "x.pt", "small_cnn", {}, {"bad": object()})
    with pytest.raises(ValueError, match="checkpoint not found"):
        load_encoder(tmp_path / "absent.pt")
    save_encoder(model, tmp_path / "wrong.pt", "small_cnn", {}, {})  # default widths: shapes differ
    with pytest.raises(ValueError, match="shape mismatches"):
        load_encoder(tmp_path / "wrong.pt")


def test_torchvision_spec_and_registry() -> None:
    model = load_encoder("torchvision:resnet18")
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 512)
    assert isinstance(build_encoder("small_cnn", in_channels=3), SmallCNN)
    with pytest.raises(ValueError, match="unknown encoder arch"):
        build_encoder("resnet9000")
    with pytest.raises(ValueError, match="unknown torchvision"):
        build_encoder("torchvision:not_a_model")


def test_simclr_closed_form_for_identical_orthogonal_views() -> None:
    batch, dim, temperature = 4, 6, 0.2
    z = torch.eye(dim)[:batch] * 3.0  # orthogonal rows; the scale must not matter
    expected = math.log(1 + (2 * batch - 2) * math.exp(-1 / temperature))
    assert simclr_loss(z, z.clone(), temperature).item() == pytest.approx(expected, rel=1e-5)


def test_simclr_and_barlow_gradients_match_finite_differences() -> None:
    generator = torch.Generator().manual_seed(0)
    z1 = torch.randn(5, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(5, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: simclr_loss(a, b, 0.5), (z1, z2))
    assert torch.autograd.gradcheck(lambda a, b: barlow_twins_loss(a, b, 0.1), (z1, z2))


def test_byol_closed_form_and_detached_target() -> None:
    p = torch.randn(3, 5, requires_grad=True)
    z = torch.randn(3, 5, requires_grad=True)
    assert byol_loss(p, p.detach() * 2).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_loss(p, -p.detach()).item() == pytest.approx(4.0, abs=1e-6)
    assert byol_loss(torch.eye(3), torch.eye(3).roll(1, 0)).item() == pytest.approx(2.0)
    byol_loss(p, z).backward()
    assert z.grad is None and p.grad is not None


def test_barlow_is_zero_for_decorrelated_standardised_identical_views() -> None:
    # columns 1..4 of the 8 x 8 Sylvester-Hadamard matrix: +-1, zero mean, unit variance, orthogonal
    h2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    hadamard = torch.kron(torch.kron(h2, h2), h2)
    z = hadamard[:, 1:5]
    assert barlow_twins_loss(z, z.clone(), lambd=5e-3, eps=0.0).item() == pytest.approx(0.0, abs=1e-10)
    assert barlow_twins_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-8)
    assert barlow_twins_loss(z, -z).item() == pytest.approx(4 * 4.0, rel=1e-4)


def test_augment_is_seeded_and_shape_preserving() -> None:
    images = torch.randn(16, 1, 8, 8)
    config = default_augment_config((1, 8, 8))
    a = augment(images, config, torch.Generator().manual_seed(1))
    b = augment(images, config, torch.Generator().manual_seed(1))
    c = augment(images, config, torch.Generator().manual_seed(2))
    assert a.shape == images.shape and torch.equal(a, b) and not torch.equal(a, c)
    shift_only = AugmentConfig(crop_scale=(1.0, 1.0), max_shift=0, hflip=True, noise_std=0.0, erase_prob=0.0)
    flipped = augment(images, shift_only, torch.Generator().manual_seed(0))
    for original, out in zip(images, flipped):  # every output is the image or its exact mirror
        assert torch.allclose(out, original, atol=1e-5) or torch.allclose(out, original.flip(-1), atol=1e-5)


@pytest.mark.parametrize("method", ["simclr", "byol", "barlow_twins"])
def test_pretrain_is_deterministic(method: str) -> None:
    data = load_images("digits")
    subset = data.subset(data.sample_ids[:300])
    torch.manual_seed(0)
    encoder = SmallCNN()
    runs = [pretrain(encoder, subset, method=method, epochs=2, batch_size=100, lr=3e-3, seed=7, progress=False)
            for _ in range(2)]
    for p, q in zip(runs[0].encoder.parameters(), runs[1].encoder.parameters()):
        assert torch.equal(p, q)
    assert runs[0].losses == runs[1].losses and len(runs[0].losses) == 2
    assert not runs[0].encoder.training and runs[0].method == method
    assert not torch.equal(next(encoder.parameters()), next(runs[0].encoder.parameters()))  # input untouched


def test_pretrain_lowers_the_loss() -> None:
    data = load_images("digits")
    subset = data.subset(data.sample_ids[:300])
    torch.manual_seed(0)
    result = pretrain(SmallCNN(), subset, method="simclr", epochs=3, batch_size=100, lr=3e-3, seed=0, progress=False)
    assert result.losses[-1] < result.losses[0]
    with pytest.raises(ValueError, match="unknown SSL method"):
        pretrain(SmallCNN(), subset, method="moco", epochs=1, progress=False)


def test_build_encoder_with_a_seed_is_reproducible_and_leaves_the_global_rng_alone():
    import torch

    from influencegate.models import build_encoder

    state = torch.random.get_rng_state()
    a, b = build_encoder("small_cnn", seed=3), build_encoder("small_cnn", seed=3)
    c = build_encoder("small_cnn", seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(next(a.parameters()), next(c.parameters()))
    d, e = build_encoder("small_cnn"), build_encoder("small_cnn")  # unseeded: the global RNG advances
    assert not torch.equal(next(d.parameters()), next(e.parameters()))
