"""The preconditioned fits (issue 16's memorising model): dense Hessian, shifted Cholesky, Hessian-
preconditioned L-BFGS / Newton, the rounds of ``fit_contrastive_newton`` to a strict local minimum, and
``newton``'s retraining to a tolerance (preconditioned CG, truncated Newton with a line search)."""
from __future__ import annotations

import torch

from influencegate.ecif import (ContrastiveProblem, FlatDual, dense_hessian, fit_contrastive, fit_contrastive_newton,
                                make_batches, shifted_cholesky)
from influencegate.ecif.hessian import preconditioned_cg
from influencegate.ecif.newton import newton_to_tolerance, retrain_to_tolerance
from influencegate.models.dual import DualEncoder
from contrastive_data import clustered, one_thread  # noqa: F401 (one_thread: autouse fixture)


def make_problem(images, texts, dual: DualEncoder, delta: float, batch_size: int) -> ContrastiveProblem:
    dual.standardize_with(images.float(), texts.float())
    model = FlatDual(dual)
    return ContrastiveProblem(model, images, texts, make_batches(len(images), batch_size, 0), delta, model.flatten())


def ill_conditioned_convex() -> ContrastiveProblem:
    """Linear image head (R strictly convex), one image feature scaled by 30 after standardisation: the
    Hessian's condition number ~1e3 times the well-scaled problem's."""
    images, texts = clustered(40, seed=0, wrong=0.2)
    problem = make_problem(images, texts, DualEncoder(6, 5, embed_dim=5, tau=1.0, text_head=False, normalize=False),
                           delta=0.1, batch_size=8)
    problem.images = images.clone()
    problem.images[:, 0] = problem.images[:, 0] * 30.0
    return problem


def normalised(delta: float = 0.5) -> ContrastiveProblem:
    """Both heads, normalised embeddings: non-convex. (At small delta this toy problem has no minimiser
    from a random start: the heads run towards the singular point of the normalisation.)"""
    images, texts = clustered(24, seed=2, wrong=0.2)
    return make_problem(images, texts, DualEncoder(6, 5, embed_dim=4, tau=0.3, seed=3), delta=delta, batch_size=8)


def non_convex_start() -> tuple[ContrastiveProblem, torch.Tensor]:
    """``normalised(30)`` and a start theta0 where its Hessian has a negative eigenvalue."""
    problem = normalised(delta=30.0)
    theta0 = problem.anchor + 0.5 * torch.randn(problem.n_params, generator=torch.Generator().manual_seed(5),
                                                dtype=torch.float64)
    assert float(torch.linalg.eigvalsh(problem.hessian(theta0))[0]) < 0  # starts where R is not convex
    return problem, theta0


def test_dense_hessian_matches_torch_func_hessian():
    problem = normalised()
    theta = problem.anchor + 0.3 * torch.randn(problem.n_params, generator=torch.Generator().manual_seed(4),
                                               dtype=torch.float64)
    assert torch.allclose(dense_hessian(problem, theta), problem.hessian(theta), atol=1e-9, rtol=1e-9)


def test_shifted_cholesky_shifts_by_twice_the_most_negative_eigenvalue():
    q = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0]
    h = q @ torch.diag(torch.tensor([-1.0, 0.5, 2.0, 5.0], dtype=torch.float64)) @ q.T
    lower, shift = shifted_cholesky(h)
    assert abs(shift - 2.0) < 1e-12
    assert torch.allclose(lower @ lower.T, h + 2.0 * torch.eye(4, dtype=torch.float64), atol=1e-12)
    lower, shift = shifted_cholesky(h + 3.0 * torch.eye(4, dtype=torch.float64))
    assert shift == 0.0


def test_preconditioned_fit_reaches_the_same_optimum_in_fewer_iterations():
    problem = ill_conditioned_convex()
    plain = fit_contrastive(problem, problem.anchor, max_iter=5000, tol=1e-9, progress=False)
    assert plain.converged, plain
    lower = torch.linalg.cholesky(dense_hessian(problem, problem.anchor))  # at the start, not at the optimum
    pre = fit_contrastive(problem, problem.anchor, max_iter=5000, tol=1e-9, progress=False, preconditioner=lower)
    assert pre.converged, pre
    assert torch.allclose(pre.theta, plain.theta, atol=1e-8)
    assert pre.iterations < plain.iterations / 3, (pre.iterations, plain.iterations)
    # from near the optimum, the preconditioned Newton steps alone (no L-BFGS iteration) reach it
    near = fit_contrastive(problem, problem.anchor, max_iter=5000, tol=1e-2, progress=False)
    newton = fit_contrastive(problem, near.theta, max_iter=0, tol=1e-9, progress=False, preconditioner=lower)
    assert newton.converged and newton.iterations == 0 and newton.newton_steps > 0, newton
    assert torch.allclose(newton.theta, plain.theta, atol=1e-8)


def test_newton_rounds_reach_a_strict_local_minimum_of_a_non_convex_problem():
    problem, theta0 = non_convex_start()
    fit, lower = fit_contrastive_newton(problem, theta0, tol=1e-9, max_rounds=10, iterations_per_round=20)
    assert fit.converged, fit
    assert float(problem.gradient(fit.theta).norm()) <= 1e-9
    hessian = problem.hessian(fit.theta)
    assert float(torch.linalg.eigvalsh(hessian)[0]) > 0  # a strict local minimum, not a saddle
    assert torch.allclose(lower @ lower.T, hessian, atol=1e-7 * float(hessian.abs().max()))
    assert fit.objective <= float(problem.objective(theta0))
    plain = fit_contrastive(problem, theta0, max_iter=3000, tol=1e-9, exact_max_params=0, progress=False)
    assert plain.converged and torch.allclose(fit.theta, plain.theta, atol=1e-8)  # the same minimum here


def test_preconditioned_cg_solves_positive_definite_systems_and_stops_at_negative_curvature():
    generator = torch.Generator().manual_seed(1)
    q = torch.linalg.qr(torch.randn(6, 6, generator=generator, dtype=torch.float64))[0]
    g = torch.randn(6, generator=generator, dtype=torch.float64)
    spd = q @ torch.diag(torch.tensor([0.1, 1.0, 2.0, 5.0, 30.0, 100.0], dtype=torch.float64)) @ q.T
    lower = torch.linalg.cholesky(spd + torch.diag(torch.linspace(0.0, 3.0, 6, dtype=torch.float64)))  # ~ spd
    x, iterations, negative = preconditioned_cg(lambda v: spd @ v, g, lower, rtol=1e-12)
    assert not negative and 0 < iterations <= 6
    assert torch.allclose(x, torch.linalg.solve(spd, g), atol=1e-9)
    indefinite = q @ torch.diag(torch.tensor([-3.0, 1.0, 2.0, 5.0, 30.0, 100.0], dtype=torch.float64)) @ q.T
    x, _, negative = preconditioned_cg(lambda v: indefinite @ v, g, torch.eye(6, dtype=torch.float64), rtol=1e-12)
    assert negative and float(x.dot(g)) > 0  # a descent direction for a step theta - x


def test_retraining_to_tolerance_reaches_a_long_lbfgs_runs_optimum_on_a_convex_problem():
    problem = ill_conditioned_convex()
    reference = fit_contrastive(problem, problem.anchor, max_iter=5000, tol=1e-10, progress=False)
    assert reference.converged, reference
    lower = torch.linalg.cholesky(dense_hessian(problem, problem.anchor))
    fit, info = retrain_to_tolerance(problem, problem.anchor, 1e-10, lower, switch=1.0)
    assert fit.converged and float(problem.gradient(fit.theta).norm()) <= 1e-10, fit
    assert fit.newton_steps > 0 and info["hessian_vector_products"] > 0  # Newton did the last part
    assert torch.allclose(fit.theta, reference.theta, atol=1e-9)


def test_newton_with_preconditioner_refreshes_reaches_a_strict_local_minimum():
    problem, theta0 = non_convex_start()
    identity = torch.eye(problem.n_params, dtype=torch.float64)  # plain Newton-CG until the first refresh
    fit, refreshes = newton_to_tolerance(problem, theta0, 1e-9, identity, max_steps=3, max_refreshes=10)
    assert fit.converged and float(problem.gradient(fit.theta).norm()) <= 1e-9, fit
    assert refreshes >= 1
    assert float(torch.linalg.eigvalsh(problem.hessian(fit.theta))[0]) > 0
    reference, _ = fit_contrastive_newton(problem, theta0, tol=1e-9, max_rounds=10, iterations_per_round=20)
    assert torch.allclose(fit.theta, reference.theta, atol=1e-8)
