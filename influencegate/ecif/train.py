"""Contrastive fine-tuning to a tight optimum on the fixed batches: full-batch L-BFGS, then Newton steps.

Influence functions linearise around a minimiser; a loosely trained model makes every ECIF number
approximate for a reason that has nothing to do with ECIF. L-BFGS (strong Wolfe line search, float64)
does the bulk of the work, but its line search compares objective values and stalls once the decrease
per step falls below the float64 resolution of R (|grad R| around sqrt(eps |R| lambda_min)). Newton steps
theta <- theta - H^-1 grad R (the same damped-Hessian solvers ECIF uses) then take the gradient norm down
quadratically; a step is kept only if it lowers |grad R|.

Ill-conditioned, non-convex objectives (LoRA on a convolutional encoder: Hessian eigenvalues from ~delta to
~1e6, negative curvature away from the optimum) defeat plain L-BFGS. ``fit_contrastive`` therefore takes a
``preconditioner``, the Cholesky factor L of a positive definite M ~ H: L-BFGS and the Newton steps (CG)
then run in the coordinates phi = L^T (theta - theta0), where the Hessian is L^-1 H L^-T ~ I.
``fit_contrastive_newton`` builds M from the dense Hessian (``dense_hessian``, P Hessian-vector products;
for P up to a few thousand), shifted to be positive definite where H is not, and repeats until the
gradient is below tol at a point where H itself is positive definite (a strict local minimum).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from influencegate.ecif.hessian import make_solver, preconditioned_cg
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


def _coordinates(theta0: torch.Tensor, preconditioner: torch.Tensor | None):
    """(to_theta, grad_to_theta): phi -> theta = theta0 + L^-T phi and grad_phi -> grad_theta = L grad_phi
    (identity maps, theta = theta0 + phi, without a preconditioner)."""
    if preconditioner is None:
        return (lambda phi: theta0 + phi), (lambda g: g)
    lower = preconditioner

    def to_theta(phi: torch.Tensor) -> torch.Tensor:
        return theta0 + torch.linalg.solve_triangular(lower.T, phi[:, None], upper=True)[:, 0]

    return to_theta, (lambda g: lower @ g)


def _lbfgs(problem: ContrastiveProblem, theta0: torch.Tensor, max_iter: int, tol: float,
           progress: bool, preconditioner: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """L-BFGS (history 50, strong Wolfe) until |grad R|_2 <= tol, max_iter, or R stops decreasing (also what
    happens on non-finite values); (theta, iterations). With a preconditioner L it runs on phi (module doc)."""
    theta0 = theta0.detach()
    to_theta, grad_to_theta = _coordinates(theta0, preconditioner)
    phi = torch.zeros_like(theta0).requires_grad_(True)
    optimizer = torch.optim.LBFGS([phi], lr=1.0, max_iter=_LBFGS_ITERATIONS_PER_STEP, history_size=50,
                                  tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = problem.objective(to_theta(phi))
        value.backward()
        return value

    iterations = 0
    with tqdm(total=max_iter, desc="ecif fit (L-BFGS)", unit="it", disable=not progress) as bar:
        while iterations < max_iter:
            before = float(closure().detach())
            grad_norm = float(grad_to_theta(phi.grad).norm())
            if grad_norm <= tol:
                break
            optimizer.step(closure)
            done = optimizer.state[phi]["n_iter"]
            bar.update(done - iterations)
            bar.set_postfix(grad_norm=f"{grad_norm:.2e}")
            iterations = done
            with torch.no_grad():
                after = float(problem.objective(to_theta(phi)))
            if not after < before:  # the line search sees no decrease any more: at the resolution of R
                break
    theta = to_theta(phi.detach()).detach()
    if not bool(torch.isfinite(theta).all()):
        raise FloatingPointError("L-BFGS produced non-finite parameters; raise delta or lower tau")
    return theta, iterations


def _preconditioned_step(problem: ContrastiveProblem, theta: torch.Tensor, g: torch.Tensor, lower: torch.Tensor,
                         rtol: float, max_iter: int = 500) -> torch.Tensor:
    """H^-1 g by ``preconditioned_cg`` with Hessian-vector products at theta; residual below rtol x |L^-1 g|.
    ArithmeticError on negative curvature or no convergence."""
    step, iterations, negative = preconditioned_cg(problem.hessian_operator(theta), g, lower, rtol, max_iter)
    if negative:
        raise ArithmeticError("negative curvature")
    if iterations >= max_iter:
        raise ArithmeticError("preconditioned CG did not converge")
    return step


def _newton(problem: ContrastiveProblem, theta: torch.Tensor, tol: float,
            exact_max_params: int, preconditioner: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Up to _NEWTON_STEPS steps theta - H^-1 grad R, each kept only if it lowers |grad R|; stops at tol or
    when the Hessian is not positive definite (not at a minimum yet). (theta, accepted steps). With a
    preconditioner the steps are solved by preconditioned CG (``_preconditioned_step``)."""
    g = problem.gradient(theta)
    accepted = 0
    for _ in range(_NEWTON_STEPS):
        norm = float(g.norm())
        if norm <= tol:
            break
        rtol = min(1e-3, 0.1 * tol / norm)
        try:
            if preconditioner is not None:
                candidate = theta - _preconditioned_step(problem, theta, g, preconditioner, rtol)
            else:
                solver = make_solver(problem, theta, 0.0, exact_max_params, cg_tol=rtol)
                if not getattr(solver, "positive_definite", True):
                    break
                candidate = theta - solver.solve(g)
        except ArithmeticError:  # CG met negative curvature
            break
        g_new = problem.gradient(candidate)
        if not float(g_new.norm()) < norm:
            break
        theta, g, accepted = candidate, g_new, accepted + 1
    return theta, accepted


def fit_contrastive(problem: ContrastiveProblem, theta0: torch.Tensor, max_iter: int = 2000, tol: float = 1e-8,
                    exact_max_params: int = 2000, progress: bool = True,
                    preconditioner: torch.Tensor | None = None) -> FitResult:
    """Minimise R from theta0 (P,): L-BFGS, then Newton steps until |grad R|_2 <= tol. Deterministic for
    equal inputs (no randomness). theta0 is not modified. ``converged`` tells whether tol was reached.
    preconditioner: optional lower-triangular Cholesky factor L (P x P float64) of a positive definite
    M ~ Hessian of R (module doc); the minimiser sought is the same, only the path to it changes."""
    start = time.perf_counter()
    theta, iterations = _lbfgs(problem, theta0.to(torch.float64), max_iter, tol, progress, preconditioner)
    theta, steps = _newton(problem, theta, tol, exact_max_params, preconditioner)
    with torch.no_grad():
        value = float(problem.objective(theta))
    grad_norm = float(problem.gradient(theta).norm())
    return FitResult(theta, value, grad_norm, iterations, steps, grad_norm <= tol, time.perf_counter() - start)


def dense_hessian(problem: ContrastiveProblem, theta: torch.Tensor) -> torch.Tensor:
    """The Hessian of R at theta, P x P float64, symmetrised: P Hessian-vector products through one graph
    (faster than ``ContrastiveProblem.hessian`` on a convolutional encoder; equal to it up to rounding)."""
    hessian = problem.hessian_operator(theta)
    columns = torch.eye(problem.n_params, dtype=torch.float64)
    h = torch.stack([hessian(columns[i]) for i in range(problem.n_params)])
    return 0.5 * (h + h.T)


def shifted_cholesky(hessian: torch.Tensor, shift_factor: float = 2.0) -> tuple[torch.Tensor, float]:
    """(L, shift): the Cholesky factor of hessian + shift I, shift = shift_factor x max(0, -lambda_min) (0
    when the hessian is positive definite), a positive definite preconditioner for a non-convex point."""
    eigenvalues = torch.linalg.eigvalsh(hessian)
    shift = shift_factor * max(0.0, -float(eigenvalues[0]))
    if float(eigenvalues[0]) + shift <= 0:  # singular (lambda_min == 0): a floor of 1e-8 of the spectrum
        shift = 1e-8 * float(eigenvalues.abs().max())
    return torch.linalg.cholesky(hessian + shift * torch.eye(len(hessian), dtype=hessian.dtype)), shift


def fit_contrastive_newton(problem: ContrastiveProblem, theta0: torch.Tensor, tol: float = 1e-8,
                           max_rounds: int = 10, iterations_per_round: int = 300,
                           progress: bool = False) -> tuple[FitResult, torch.Tensor]:
    """Minimise R from theta0 with dense-Hessian preconditioning, for P up to a few thousand: each round
    takes the dense Hessian at the current point, shifts it positive definite (``shifted_cholesky``) and runs
    ``fit_contrastive`` with that preconditioner for up to iterations_per_round L-BFGS iterations; it stops
    once |grad R| <= tol at a point whose Hessian needed no shift. Returns (FitResult over all rounds, L)
    with L the Cholesky factor of the last Hessian (at theta_hat when converged: a preconditioner for
    warm-started retraining). ``converged``: tol reached and the Hessian there positive definite."""
    start = time.perf_counter()
    theta = theta0.detach().to(torch.float64)
    iterations = steps = 0
    positive_definite = False
    for _ in range(max_rounds):
        lower, shift = shifted_cholesky(dense_hessian(problem, theta))
        positive_definite = shift == 0.0
        if positive_definite and float(problem.gradient(theta).norm()) <= tol:
            break
        fit = fit_contrastive(problem, theta, iterations_per_round, tol, 0, progress, lower)
        theta, iterations, steps = fit.theta, iterations + fit.iterations, steps + fit.newton_steps
    else:
        lower, shift = shifted_cholesky(dense_hessian(problem, theta))
        positive_definite = shift == 0.0
    with torch.no_grad():
        value = float(problem.objective(theta))
    grad_norm = float(problem.gradient(theta).norm())
    return (FitResult(theta, value, grad_norm, iterations, steps, grad_norm <= tol and positive_definite,
                      time.perf_counter() - start), lower)
