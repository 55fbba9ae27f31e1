"""Issue 16: LoRA on convolutions and ECIF in a projected space, against exact references.

Tiny float64 problems (synthetic clustered features, random 8 x 8 images): the projected curvature against
the exact Hessian and an independently built Gauss-Newton matrix, projected ECIF at k = P against exact ECIF,
and against exact leave-one-out retraining.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from influencegate.ecif import (
    ContrastiveProblem,
    ExactSolver,
    FlatDual,
    batch_loss,
    explicit_pair_influence,
    fit_contrastive,
    loss_gradient,
    make_batches,
    pair_gradients,
    reference_loss,
)
from influencegate.ecif.projected import ProjectedEcif, krylov_projection, project_pairs, random_projection
from influencegate.models.dual import DualEncoder, add_lora
from influencegate.models.lora_conv import LoRAConv2d
from influencegate.models.small_cnn import SmallCNN
from contrastive_data import clustered, one_thread  # noqa: F401 (one_thread: autouse fixture)

ALL_LAYERS = ("features.0", "features.2", "features.4", "head")


def make_problem(dual: DualEncoder, images, texts, batch_size: int, delta: float, features=None) -> ContrastiveProblem:
    dual.standardize_with((images if features is None else features).float(), texts.float())
    model = FlatDual(dual)
    return ContrastiveProblem(model, images, texts, make_batches(len(images), batch_size, 0), delta, model.flatten())


@pytest.fixture(scope="module")
def convex():
    """Image head only, no normalisation: S linear in theta (Gauss-Newton = Hessian), trained tightly; delta
    large enough that one pair's removal is a small perturbation (the regime of a first-order prediction)."""
    images, texts = clustered(40, seed=0, wrong=0.2)
    problem = make_problem(DualEncoder(6, 5, embed_dim=5, tau=1.0, text_head=False, normalize=False),
                           images, texts, batch_size=20, delta=100.0)
    fit = fit_contrastive(problem, problem.anchor, tol=1e-10, progress=False)
    assert fit.converged
    ref_images, ref_texts = clustered(24, seed=1)
    return problem, fit.theta, reference_loss(problem.model, ref_images, ref_texts, batch_size=8, seed=0)


@pytest.fixture(scope="module")
def lora_cnn():
    """Normalised dual encoder over a SmallCNN with LoRA on its convolutions and Linear layer (non-convex),
    at a random point near the initialisation."""
    encoder = SmallCNN(in_channels=1, widths=(2, 3, 4), embed_dim=4)
    dual = DualEncoder(4, 5, embed_dim=3, tau=0.5, image_encoder=encoder, lora_layers=ALL_LAYERS, lora_rank=1)
    images = torch.randn(12, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _, texts = clustered(12, seed=2, wrong=0.25)
    with torch.no_grad():
        problem = make_problem(dual, images, texts, batch_size=6, delta=0.5, features=encoder(images.float()))
    theta = problem.anchor + 0.2 * torch.randn(problem.n_params, generator=torch.Generator().manual_seed(1),
                                               dtype=torch.float64)
    return problem, theta


@pytest.fixture(scope="module")
def lora_minimum():
    """The LoRA dual encoder (Softplus for ReLU: twice differentiable; heads fixed, as in the benchmark) fitted
    to a strict local minimum of R (|grad R| <= 1e-10, Hessian positive definite; the data term's curvature
    at the anchor spans about -2e4 to 2e5 on these standardised features, so delta 2e5 and Gauss-Newton != Hessian),
    its gradient of a reference loss and the exact ECIF (dense Hessian)."""
    with torch.random.fork_rng():
        torch.manual_seed(1)  # an initialisation from which L-BFGS + Newton reach the strict minimum
        encoder = SmallCNN(in_channels=1, widths=(2, 3, 4), embed_dim=4)
    for index in (1, 3, 5):
        encoder.features[index] = nn.Softplus(10.0)
    dual = DualEncoder(4, 5, embed_dim=3, tau=0.5, image_encoder=encoder, lora_layers=ALL_LAYERS, lora_rank=1,
                       train_heads=False)
    images = torch.randn(12, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _, texts = clustered(12, seed=2, wrong=0.25)
    with torch.no_grad():
        problem = make_problem(dual, images, texts, batch_size=6, delta=2e5, features=encoder(images.float()))
    fit = fit_contrastive(problem, problem.anchor, tol=1e-10, progress=False)
    assert fit.converged and float(torch.linalg.eigvalsh(problem.hessian(fit.theta))[0]) > 0
    ref_images = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ref = reference_loss(problem.model, ref_images, clustered(8, seed=4)[1], batch_size=4, seed=0)
    grad_ref = loss_gradient(ref, fit.theta)
    exact = explicit_pair_influence(*pair_gradients(problem, fit.theta), ExactSolver(problem.hessian(fit.theta)), grad_ref)
    return problem, fit.theta, grad_ref, exact


def test_lora_conv_starts_equal_to_the_base_convolution_and_moves_with_b():
    conv = nn.Conv2d(3, 5, kernel_size=3, stride=2, padding=1)
    lora = LoRAConv2d(conv, rank=2, alpha=2.0, generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 3, 9, 9)
    assert torch.equal(lora(x), conv(x))  # B = 0: exactly the base output
    with torch.no_grad():
        lora.lora_b.normal_()
    assert lora(x).shape == conv(x).shape and not torch.allclose(lora(x), conv(x))


def test_lora_on_convolutions_trains_the_adapters_only():
    encoder = SmallCNN(in_channels=1, widths=(2, 3, 4), embed_dim=4)
    adapted = add_lora(encoder, ALL_LAYERS, rank=2)
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(adapted(x), encoder(x))
    assert [n for n, p in adapted.named_parameters() if p.requires_grad] == [
        f"{layer}.{ab}" for layer in ALL_LAYERS for ab in ("lora_a", "lora_b")]
    dual = DualEncoder(4, 5, embed_dim=3, image_encoder=encoder, lora_layers=ALL_LAYERS, train_heads=False)
    assert all(".lora_" in n for n, p in dual.named_parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="not Linear or Conv2d"):
        add_lora(encoder, ["features.1"])


def test_projected_ecif_at_full_dimension_equals_exact_ecif(convex):
    problem, theta, ref = convex
    grad_ref = loss_gradient(ref, theta)
    exact = explicit_pair_influence(*pair_gradients(problem, theta), ExactSolver(problem.hessian(theta)), grad_ref)
    phi = random_projection(problem.n_params, problem.n_params, seed=0)
    for curvature in ("gauss_newton", "hessian"):
        projected = ProjectedEcif(project_pairs(problem, theta, phi, curvature, chunk=7)).influence(grad_ref)
        for p, e in zip(projected, exact):
            assert float((p - e).abs().max()) < 1e-8 * float(e.abs().max())


def test_projected_curvatures_match_independent_references(lora_cnn):
    """Phi H Phi^T against the exact Hessian; the Gauss-Newton matrix against J^T (d2 L / dS2) J built from the
    full Jacobian of S (jacrev) and the Hessian of the batch loss in S (torch.func.hessian)."""
    problem, theta = lora_cnn
    phi = random_projection(problem.n_params, 9, seed=1)
    hessian = project_pairs(problem, theta, phi, "hessian").curvature
    assert torch.allclose(hessian, phi @ problem.hessian(theta) @ phi.T, rtol=1e-8, atol=1e-10)
    reference = problem.delta * phi @ phi.T
    for members in problem.batches.members:
        sim = problem.batch_similarity(theta, members)
        jac = torch.func.jacrev(problem.batch_similarity)(theta, members).reshape(-1, problem.n_params) @ phi.T
        reference = reference + jac.T @ torch.func.hessian(batch_loss)(sim).reshape(sim.numel(), -1) @ jac
    projected = project_pairs(problem, theta, phi, "gauss_newton", chunk=4)
    assert torch.allclose(projected.curvature, reference, rtol=1e-8, atol=1e-10)
    g_pos, g_neg = pair_gradients(problem, theta)
    assert torch.allclose(projected.g_pos, g_pos @ phi.T, atol=1e-10)
    assert torch.allclose(projected.g_neg, g_neg @ phi.T, atol=1e-10)
    assert float(torch.linalg.eigvalsh(projected.curvature).min()) > 0  # Gauss-Newton: PSD (+ delta Phi Phi^T)


def test_projected_ecif_matches_exact_leave_one_out_retraining(convex):
    problem, theta, ref = convex
    phi = random_projection(problem.n_params, problem.n_params, seed=2)
    ecif = ProjectedEcif(project_pairs(problem, theta, phi))
    pos, neg = ecif.influence(loss_gradient(ref, theta))
    removed = list(range(0, 40, 2))
    true = []
    for n in removed:
        retrained = fit_contrastive(problem.with_batches(problem.batches.without([n])), theta, tol=1e-10, progress=False)
        assert retrained.converged
        true.append(float(ref(retrained.theta) - ref(theta)))
    assert np.corrcoef((pos + neg)[removed].numpy(), true)[0, 1] >= 0.99
    edit = ecif.removal_edit(torch.tensor([0]))
    retrained = fit_contrastive(problem.with_batches(problem.batches.without([0])), theta, tol=1e-10, progress=False)
    assert float((theta + edit - retrained.theta).norm()) < 0.5 * float((retrained.theta - theta).norm())


def test_unknown_curvature_and_indefinite_matrix_raise(lora_cnn):
    problem, theta = lora_cnn
    phi = random_projection(problem.n_params, 4, seed=0)
    with pytest.raises(ValueError, match="curvature"):
        project_pairs(problem, theta, phi, "fisher")
    pairs = project_pairs(problem, theta, phi)
    with pytest.raises(ArithmeticError, match="damping"):
        ProjectedEcif(pairs, damping=-10 * float(pairs.curvature.diagonal().max()))


def test_projected_hessian_and_krylov_at_full_dimension_equal_exact_ecif_on_a_non_convex_model(lora_minimum):
    """At a strict local minimum of the LoRA model: the projected exact Hessian (random Phi, k = P) and the
    Krylov projection of grad L' (k = P) reproduce the exact-Hessian ECIF; Gauss-Newton does not (it drops
    the residual term), so the test can tell the curvatures apart."""
    problem, theta, grad_ref, exact = lora_minimum
    hessian = problem.hessian_operator(theta)
    scale = float(max(e.abs().max() for e in exact))
    phis = {"random": random_projection(problem.n_params, problem.n_params, seed=0),
            "krylov": krylov_projection(hessian, grad_ref, problem.n_params)}
    for name, phi in phis.items():
        projected = ProjectedEcif(project_pairs(problem, theta, phi, "hessian")).influence(grad_ref)
        for p, e in zip(projected, exact):
            assert float((p - e).abs().max()) < 1e-6 * scale, name
    gauss_newton = ProjectedEcif(project_pairs(problem, theta, phis["random"], "gauss_newton")).influence(grad_ref)
    assert float((gauss_newton[0] - exact[0]).abs().max()) > 1e-3 * scale


def test_krylov_projection_is_orthonormal_and_gives_the_conjugate_gradient_iterate(lora_minimum):
    """k < P: Phi Phi^T = I, and Phi^T (Phi H Phi^T)^-1 Phi b equals k steps of plain conjugate gradients."""
    problem, theta, grad_ref, _ = lora_minimum
    h = problem.hessian(theta)
    k = 5
    phi = krylov_projection(lambda v: h @ v, grad_ref, k)
    assert phi.shape == (k, problem.n_params)
    assert torch.allclose(phi @ phi.T, torch.eye(k, dtype=torch.float64), atol=1e-10)
    galerkin = phi.T @ torch.linalg.solve(phi @ h @ phi.T, phi @ grad_ref)
    x, r = torch.zeros_like(grad_ref), grad_ref.clone()
    p = r.clone()
    for _ in range(k):
        hp = h @ p
        alpha = r.dot(r) / p.dot(hp)
        x, r_new = x + alpha * p, r - alpha * hp
        p, r = r_new + r_new.dot(r_new) / r.dot(r) * p, r_new
    assert float((galerkin - x).norm()) < 1e-6 * float(x.norm())
    assert float((galerkin - torch.linalg.solve(h, grad_ref)).norm()) > 1e-6 * float(x.norm())  # not yet exact
    with pytest.raises(ValueError, match="positive"):
        krylov_projection(lambda v: h @ v, grad_ref, 0)
