"""The paper's linear-case results (Theorem 1, Proposition 1), derived in closed form and checked against the
engine's exact path; then the properties that carry over to the dataset-curvature score used in practice.

Setting (Theorem 1): f(x) = v^T (W x), W: k x d, v: k; augmentation x_hat = x + eps delta(x), |delta| = 1;
SSL loss L(x) = |f(x_hat) - f(x)|^2 = r^2 with r = eps v^T W delta; curvature: the Hessian of L, damped by
lambda. Tracking W: r is linear in W with grad_W r = eps v delta^T, so grad L = 2 r grad r and the Hessian
is exactly H = 2 grad r grad r^T (rank one). With s = |grad r|^2 = eps^2 |v|^2, Sherman-Morrison gives

    I_lambda(x) = (2 r grad r)^T (lambda I + 2 grad r grad r^T)^-1 (2 r grad r) = 4 r^2 s / (lambda + 2 s)
    I_0(x)      = lim_{lambda -> 0} I_lambda(x) = 2 r^2 = 2 eps^2 (v^T W delta)^2.

Tracking v instead: grad_v r = eps W delta, s_v = eps^2 |W delta|^2, same form, same limit.
Proposition 1 then reads: (A) I_0 = eps^2 x 2 tr(W^T v v^T W delta delta^T) (scale times geometry);
(B) invariance under (W, v) -> (QW, Qv) for orthogonal Q; (C) I_0(c eps) = c^2 I_0(eps), I(cW) = c^2 I(W).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from influencegate import InfluenceConfig, InfluenceScorer, exact_self_influence
from influencegate.data import ImageDataset

D_IN, K_HIDDEN = 5, 3


def linear_net(w: torch.Tensor, v: torch.Tensor) -> nn.Module:
    net = nn.Sequential(nn.Flatten(), nn.Linear(D_IN, K_HIDDEN, bias=False), nn.Linear(K_HIDDEN, 1, bias=False))
    net = net.double()
    with torch.no_grad():
        net[1].weight.copy_(w)
        net[2].weight.copy_(v.reshape(1, -1))
    return net


def direction(x: torch.Tensor) -> torch.Tensor:
    """delta(x): an input-dependent unit vector."""
    d = torch.sin(3.0 * x) + 0.5
    return d / d.norm(dim=-1, keepdim=True)


def engine_influence(w, v, x, eps, lam, layer="1") -> float:
    cfg = InfluenceConfig(perturbation=lambda images, ids: images + eps * direction(images), objective="euclidean",
                          draws=1, damping=lam, precision="fp64", progress=False)
    data = ImageDataset.from_tensors(x.reshape(1, 1, 1, D_IN), ["x"])
    table = exact_self_influence(linear_net(w, v), data, cfg, curvature="hessian", layers=[layer])
    return float(table["influence"].iloc[0])


def closed_form(w, v, x, eps, lam, layer="1") -> float:
    r = eps * float(v @ w @ direction(x))
    s = eps**2 * float(v @ v) if layer == "1" else eps**2 * float((w @ direction(x)).pow(2).sum())
    return 4 * r**2 * s / (lam + 2 * s) if lam > 0 else 2 * r**2


@pytest.fixture
def setting():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(K_HIDDEN, D_IN, generator=gen, dtype=torch.float64)
    v = torch.randn(K_HIDDEN, generator=gen, dtype=torch.float64)
    x = torch.randn(D_IN, generator=gen, dtype=torch.float64)
    return w, v, x


@pytest.mark.parametrize("layer", ["1", "2"])
@pytest.mark.parametrize("lam", [1e-2, 1.0])
def test_theorem1_closed_form_matches_engine(setting, layer, lam):
    w, v, x = setting
    for eps in (0.05, 0.3):
        assert engine_influence(w, v, x, eps, lam, layer) == pytest.approx(closed_form(w, v, x, eps, lam, layer), rel=1e-6)


@pytest.mark.parametrize("layer", ["1", "2"])
def test_theorem1_limit_lambda_to_zero(setting, layer):
    w, v, x = setting
    eps = 0.2
    limit = 2 * eps**2 * float(v @ w @ direction(x)) ** 2
    assert engine_influence(w, v, x, eps, 1e-12, layer) == pytest.approx(limit, rel=1e-6)


def test_prop1_decomposition_scale_times_geometry(setting):
    w, v, x = setting
    geometry = 2 * float(torch.trace(w.T @ torch.outer(v, v) @ w @ torch.outer(direction(x), direction(x))))
    for eps in (0.01, 0.1, 0.5):
        assert engine_influence(w, v, x, eps, 1e-12) / eps**2 == pytest.approx(geometry, rel=1e-6)


@pytest.mark.parametrize("layer", ["1", "2"])
def test_prop1_orthogonal_invariance(setting, layer):
    w, v, x = setting
    q, _ = torch.linalg.qr(torch.randn(K_HIDDEN, K_HIDDEN, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    for lam in (1e-12, 0.1):
        assert engine_influence(q @ w, q @ v, x, 0.2, lam, layer) == pytest.approx(engine_influence(w, v, x, 0.2, lam, layer), rel=1e-6)


def test_prop1_quadratic_scaling_in_eps_and_w(setting):
    w, v, x = setting
    base = engine_influence(w, v, x, 0.1, 1e-12)
    for c in (0.5, 3.0):
        assert engine_influence(w, v, x, c * 0.1, 1e-12) == pytest.approx(c**2 * base, rel=1e-6)
        # tracking W, s does not depend on W: the scaling is exact at any lambda
        assert engine_influence(c * w, v, x, 0.1, 0.3) == pytest.approx(c**2 * engine_influence(w, v, x, 0.1, 0.3), rel=1e-6)


# --- what carries over to the practical score: cosine objective, dataset Fisher, per-layer damping ---------

def relu_net() -> nn.Module:
    torch.manual_seed(4)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 6), nn.ReLU(),
                         nn.Linear(6, 4)).double()


@pytest.fixture(scope="module")
def data() -> ImageDataset:
    images = torch.randn(24, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return ImageDataset.from_tensors(images, [f"s{i}" for i in range(24)])


def practical(model: nn.Module, data: ImageDataset, **overrides) -> np.ndarray:
    exact = overrides.get("curvature") == "exact"
    options = {k: v for k, v in overrides.items() if not (exact and k == "curvature")}
    cfg = InfluenceConfig(**{**dict(precision="fp64", draws=2, batch_size=12, progress=False), **options})
    if exact:
        return exact_self_influence(model, data, cfg, block_diagonal=False)["influence"].to_numpy()
    return InfluenceScorer(model, cfg).fit(data).score(data)["influence"].to_numpy()


@pytest.mark.parametrize("overrides", [dict(curvature="exact"), dict(curvature="raw", projection="identity"),
                                       dict(curvature="ekfac", projection="identity"),
                                       dict(curvature="ekfac", rank=8)])
def test_practical_score_is_invariant_to_rotating_the_representation(data, overrides):
    """Carries over: phi -> Q phi leaves every cosine unchanged and rotates the last layer's gradients."""
    model = relu_net()
    rotated = relu_net()
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    with torch.no_grad():
        rotated[5].weight.copy_(q @ model[5].weight)
        rotated[5].bias.copy_(q @ model[5].bias)
    np.testing.assert_allclose(practical(rotated, data, **overrides), practical(model, data, **overrides), rtol=1e-8)


@pytest.mark.parametrize("overrides", [dict(curvature="exact"), dict(curvature="ekfac", rank=8)])
def test_practical_score_is_invariant_to_weight_scale_under_relative_damping(data, overrides):
    """Replaces (C): scaling the last layer by c scales phi by c; cos is unchanged, that layer's gradients scale
    by 1/c and its Fisher block and damping by 1/c^2, so the score does not move (no c^2 law)."""
    model, scaled = relu_net(), relu_net()
    with torch.no_grad():
        scaled[5].weight.mul_(3.0)
        scaled[5].bias.mul_(3.0)
    np.testing.assert_allclose(practical(scaled, data, **overrides), practical(model, data, **overrides), rtol=1e-8)
