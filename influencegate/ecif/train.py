"""Contrastive fine-tuning to a tight optimum on the fixed batches: full-batch L-BFGS, then Newton steps.

Influence functions linearise around a minimiser; a loosely trained model makes every ECIF number
approximate for a reason that has nothing to do with ECIF. L-BFGS (strong Wolfe line search, float64)
does the bulk of the work, but its line search compares objective values and stalls once the decrease
per step falls below the float64 resolution of R (|grad R| around sqrt(eps |R| lambda_min)). Newton steps
theta <- theta - H^-1 grad R (the same damped-Hessian solvers ECIF uses) then take the gradient norm down
quadratically; a step is kept only if it lowers |grad R|.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from influencegate.ecif.hessian import make_solver
from influencegate.ecif.problem import ContrastiveProblem

_LBFGS_ITERATIONS_PER_STEP = 25
_NEWTON_STEPS = 8


@dataclass
class FitResult:
    """theta: (P,) float64 minimiser found; objective: R(theta), nats; grad_norm: |grad R(theta)|_2;
    iterations: L-BFGS iterations; newton_steps: accepted Newton steps; converged: grad_norm <= tol;
    seconds: wall-clock time."""

    theta: torch.Tensor
    objective: float
    grad_norm: float
    iterations: int
    newton_steps: int
    converged: bool
    seconds: float


def _lbfgs(problem: ContrastiveProblem, theta0: torch.Tensor, max_iter: int, tol: float,
           progress: bool) -> tuple[torch.Tensor, int]:
    """L-BFGS (history 50, strong Wolfe) until |grad R|_2 <= tol, max_iter, or R stops decreasing (also what
    happens on non-finite values); (theta, iterations)."""
    theta = theta0.detach().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([theta], lr=1.0, max_iter=_LBFGS_ITERATIONS_PER_STEP, history_size=50,
                                  tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = problem.objective(theta)
        value.backward()
        return value

    iterations = 0
    with tqdm(total=max_iter, desc="ecif fit (L-BFGS)", unit="it", disable=not progress) as bar:
        while iterations < max_iter:
            before = float(closure().detach())
            grad_norm = float(theta.grad.norm())
            if grad_norm <= tol:
                break
            optimizer.step(closure)
            done = optimizer.state[theta]["n_iter"]
            bar.update(done - iterations)
            bar.set_postfix(grad_norm=f"{grad_norm:.2e}")
            iterations = done
            with torch.no_grad():
                after = float(problem.objective(theta))
            if not after < before:  # the line search sees no decrease any more: at the resolution of R
                break
    if not bool(torch.isfinite(theta).all()):
        raise FloatingPointError("L-BFGS produced non-finite parameters; raise delta or lower tau")
    return theta.detach(), iterations


def _newton(problem: ContrastiveProblem, theta: torch.Tensor, tol: float,
            exact_max_params: int) -> tuple[torch.Tensor, int]:
    """Up to _NEWTON_STEPS steps theta - H^-1 grad R, each kept only if it lowers |grad R|; stops at tol or
    when the Hessian is not positive definite (not at a minimum yet). (theta, accepted steps)."""
    g = problem.gradient(theta)
    accepted = 0
    for _ in range(_NEWTON_STEPS):
        norm = float(g.norm())
        if norm <= tol:
            break
        solver = make_solver(problem, theta, 0.0, exact_max_params, cg_tol=min(1e-3, 0.1 * tol / norm))
        if not getattr(solver, "positive_definite", True):
            break
        try:
            candidate = theta - solver.solve(g)
        except ArithmeticError:  # CG met negative curvature
            break
        g_new = problem.gradient(candidate)
        if not float(g_new.norm()) < norm:
            break
        theta, g, accepted = candidate, g_new, accepted + 1
    return theta, accepted


def fit_contrastive(problem: ContrastiveProblem, theta0: torch.Tensor, max_iter: int = 2000, tol: float = 1e-8,
                    exact_max_params: int = 2000, progress: bool = True) -> FitResult:
    """Minimise R from theta0 (P,): L-BFGS, then Newton steps until |grad R|_2 <= tol. Deterministic for
    equal inputs (no randomness). theta0 is not modified. ``converged`` tells whether tol was reached."""
    start = time.perf_counter()
    theta, iterations = _lbfgs(problem, theta0.to(torch.float64), max_iter, tol, progress)
    theta, steps = _newton(problem, theta, tol, exact_max_params)
    with torch.no_grad():
        value = float(problem.objective(theta))
    grad_norm = float(problem.gradient(theta).norm())
    return FitResult(theta, value, grad_norm, iterations, steps, grad_norm <= tol, time.perf_counter() - start)
