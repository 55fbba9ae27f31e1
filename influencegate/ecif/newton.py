"""Retraining to a gradient tolerance: preconditioned L-BFGS, then truncated Newton with a line search.

Ground truth for influence (leave-one-out and subset retraining) needs every retraining at |grad R| <= tol.
L-BFGS brings R from a warm start close to the new optimum cheaply, but its line search stalls once R's
decrease per step falls below float64 resolution (on the memorising LoRA model around |grad R| ~ 1e-3).
Newton steps then finish quadratically: each solves H d = grad R by conjugate gradients on exact
Hessian-vector products at the current point, in the coordinates of a fixed preconditioner L (L L^T ~ H,
e.g. the Cholesky factor of a dense Hessian); CG stops at negative curvature (the iterate so far is still a
descent direction), and a backtracking line search on R (Armijo) damps the step. Where R's decrease is
below its resolution, a step is accepted if it lowers |grad R|. When the steps stall, the preconditioner is
refreshed from the dense Hessian at the current point, shifted positive definite (``train.shifted_cholesky``).
"""
from __future__ import annotations

import time

import torch

from influencegate.ecif.hessian import preconditioned_cg
from influencegate.ecif.problem import ContrastiveProblem
from influencegate.ecif.train import FitResult, _lbfgs, dense_hessian, shifted_cholesky

_ARMIJO = 1e-4
_MIN_STEP = 2.0 ** -20
_RESOLUTION = 1e-13  # relative change of R below which its comparison is rounding


def _line_search(problem: ContrastiveProblem, theta: torch.Tensor, value: float, g: torch.Tensor,
                 direction: torch.Tensor) -> tuple[torch.Tensor, float, torch.Tensor] | None:
    """Backtracking from theta - direction (halving) to the first point with Armijo decrease of R, or, where
    R's change is below its resolution, a smaller |grad R|. (theta, R, grad R) there; None if none found."""
    slope, norm, step = float(g.dot(direction)), float(g.norm()), 1.0
    while step >= _MIN_STEP:
        candidate = theta - step * direction
        with torch.no_grad():
            new_value = float(problem.objective(candidate))
        if new_value <= value - _ARMIJO * step * slope and new_value < value:
            return candidate, new_value, problem.gradient(candidate)
        if abs(new_value - value) <= _RESOLUTION * abs(value):
            new_g = problem.gradient(candidate)
            if float(new_g.norm()) < norm:
                return candidate, new_value, new_g
        step *= 0.5
    return None


def newton_to_tolerance(problem: ContrastiveProblem, theta0: torch.Tensor, tol: float, lower: torch.Tensor,
                        max_steps: int = 60, max_refreshes: int = 2) -> tuple[FitResult, int]:
    """Truncated Newton steps (module doc) from theta0 (P,) until |grad R| <= tol, at most max_steps per
    preconditioner; on a failed line search or max_steps without tol, the preconditioner is refreshed from the
    dense Hessian at the current point (at most max_refreshes times). Returns (FitResult with newton_steps
    the accepted steps and iterations the Hessian-vector products, refreshes done)."""
    start = time.perf_counter()
    theta = theta0.detach().to(torch.float64)
    with torch.no_grad():
        value = float(problem.objective(theta))
    g = problem.gradient(theta)
    steps = products = refreshes = 0
    while True:
        for _ in range(max_steps):
            norm = float(g.norm())
            if norm <= tol:
                break
            direction, used, _ = preconditioned_cg(problem.hessian_operator(theta), g, lower, min(0.1, norm ** 0.5))
            products += used
            found = _line_search(problem, theta, value, g, direction)
            if found is None:
                break
            theta, value, g = found
            steps += 1
        if float(g.norm()) <= tol or refreshes >= max_refreshes:
            break
        lower, _ = shifted_cholesky(dense_hessian(problem, theta))
        refreshes += 1
    norm = float(g.norm())
    return FitResult(theta, value, norm, products, steps, norm <= tol, time.perf_counter() - start), refreshes


def retrain_to_tolerance(problem: ContrastiveProblem, theta0: torch.Tensor, tol: float, lower: torch.Tensor,
                         switch: float = 1e-2, max_lbfgs: int = 2000) -> tuple[FitResult, dict]:
    """Minimise R from theta0 (P,) to |grad R| <= tol: L-BFGS preconditioned by lower (P x P, Cholesky factor
    of a positive definite M ~ H) until |grad R| <= switch, max_lbfgs iterations or its stall, then
    ``newton_to_tolerance``. Returns (FitResult: iterations = L-BFGS iterations, newton_steps, grad_norm,
    converged; info: L-BFGS seconds, Hessian-vector products, refreshes)."""
    start = time.perf_counter()
    theta, iterations = _lbfgs(problem, theta0.to(torch.float64), max_lbfgs, switch, False, lower)
    lbfgs_seconds = time.perf_counter() - start
    fit, refreshes = newton_to_tolerance(problem, theta, tol, lower)
    info = {"lbfgs_seconds": lbfgs_seconds, "hessian_vector_products": fit.iterations, "refreshes": refreshes}
    return FitResult(fit.theta, fit.objective, fit.grad_norm, iterations, fit.newton_steps, fit.converged,
                     time.perf_counter() - start), info
