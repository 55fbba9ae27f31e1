"""Damped inverse-Hessian solves (H + damping I) x = b for the objective R at its minimiser.

Exact: the P x P Hessian (torch.func.hessian) factorised once; for small P (EcifConfig.exact_max_params).
Conjugate gradients: Hessian-vector products only (reverse over reverse through one kept graph of grad R),
P x K right-hand sides at once; beyond that.
Low rank: Lanczos eigenpairs of the top of the spectrum and the floor delta elsewhere; an approximation for
many right-hand sides at once (self-influence), where one CG solve per pair would cost too much.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from influencegate.ecif.problem import ContrastiveProblem


class ExactSolver:
    """Solves with the exact damped Hessian, factorised once (Cholesky; LU when it is not positive definite).

    hessian: P x P float64 (R's Hessian, which already holds delta I); damping: added to its diagonal.
    """

    method = "exact"

    def __init__(self, hessian: torch.Tensor, damping: float = 0.0) -> None:
        self.matrix = hessian + damping * torch.eye(hessian.shape[0], dtype=hessian.dtype)
        factor, info = torch.linalg.cholesky_ex(self.matrix)
        self.positive_definite = int(info) == 0
        self._cholesky = factor if self.positive_definite else None
        self._lu = None if self.positive_definite else torch.linalg.lu_factor(self.matrix)

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        """x = (H + damping I)^-1 b for b (P,) or P x K; same shape, float64."""
        rhs = b[:, None] if b.ndim == 1 else b
        x = (torch.cholesky_solve(rhs, self._cholesky) if self.positive_definite
             else torch.linalg.lu_solve(*self._lu, rhs))
        return x[:, 0] if b.ndim == 1 else x


@dataclass
class CGSolver:
    """Conjugate gradients on (H + damping I) x = b using the problem's Hessian-vector products at theta.

    Each column stops when its residual is below tol x |b| (relative, 2-norm). Raises ArithmeticError on
    negative curvature (H + damping I not positive definite: raise the damping) and when max_iter is
    reached without convergence. ``iterations`` records the last solve's count.
    """

    problem: ContrastiveProblem
    theta: torch.Tensor
    damping: float = 0.0
    tol: float = 1e-10
    max_iter: int = 1000
    progress: bool = False
    iterations: int = field(default=0, init=False)
    method = "cg"

    def __post_init__(self) -> None:
        self._hessian = self.problem.hessian_operator(self.theta)

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """(H + damping I) v for v (P,) or P x K."""
        return self._hessian(v) + self.damping * v

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        """x = (H + damping I)^-1 b for b (P,) or P x K; same shape, float64."""
        rhs = (b[:, None] if b.ndim == 1 else b).to(torch.float64)
        x = torch.zeros_like(rhs)
        r = rhs.clone()
        p = r.clone()
        rr = (r * r).sum(0)
        target = (self.tol * rhs.norm(dim=0)) ** 2
        bar = tqdm(total=self.max_iter, desc="ecif CG", unit="it", disable=not self.progress)
        self.iterations = 0
        while bool((rr > target).any()):
            if self.iterations == self.max_iter:
                bar.close()
                worst = math.sqrt(float((rr / rhs.norm(dim=0).clamp_min(1e-300) ** 2).max()))
                raise ArithmeticError(f"CG did not converge in {self.max_iter} iterations (relative residual {worst:.2e}); "
                                      "raise cg_max_iter or the damping")
            active = rr > target
            hp = self.apply(p)
            curvature = (p * hp).sum(0)
            if bool((curvature[active] <= 0).any()):
                bar.close()
                raise ArithmeticError("negative curvature in CG: the damped Hessian is not positive definite; "
                                      "raise the damping")
            alpha = torch.where(active, rr / torch.where(active, curvature, 1.0), 0.0)
            x = x + alpha * p
            r = r - alpha * hp
            rr_new = (r * r).sum(0)
            p = r + torch.where(active, rr_new / torch.where(active, rr, 1.0), 0.0) * p
            rr = rr_new
            self.iterations += 1
            bar.update(1)
        bar.close()
        return x[:, 0] if b.ndim == 1 else x


def preconditioned_cg(hessian: Callable[[torch.Tensor], torch.Tensor], g: torch.Tensor, lower: torch.Tensor,
                      rtol: float, max_iter: int = 500) -> tuple[torch.Tensor, int, bool]:
    """Solve H x = g (P,) by CG on L^-1 H L^-T y = L^-1 g, x = L^-T y, lower L (P x P) lower-triangular.

    Stops when the residual is below rtol x |L^-1 g|, after max_iter iterations, or at the first direction of
    non-positive curvature (then the iterate so far, or L^-T L^-1 g if there is none: x . g > 0 either way).
    Returns (x, iterations, negative_curvature_met)."""
    left = lambda v: torch.linalg.solve_triangular(lower, v[:, None], upper=False)[:, 0]  # noqa: E731
    right = lambda v: torch.linalg.solve_triangular(lower.T, v[:, None], upper=True)[:, 0]  # noqa: E731
    b = left(g)
    y, r = torch.zeros_like(b), b.clone()
    p, rr = r.clone(), r.dot(r)
    target = (rtol * b.norm()) ** 2
    for iteration in range(max_iter):
        if rr <= target:
            return right(y), iteration, False
        ap = left(hessian(right(p)))
        curvature = p.dot(ap)
        if curvature <= 0:
            return right(y if iteration else b), iteration, True
        step = rr / curvature
        y, r = y + step * p, r - step * ap
        rr, previous = r.dot(r), rr
        p = r + (rr / previous) * p
    return right(y), max_iter, False


def lanczos(operator: Callable[[torch.Tensor], torch.Tensor], size: int, rank: int,
            seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Extreme eigenpairs of a symmetric operator (size x size, given by products) by Lanczos with full
    reorthogonalisation: (eigenvalues (k,), eigenvectors size x k, orthonormal), k = min(rank, size) or fewer
    when an invariant subspace is found. Ritz pairs: the largest eigenvalues converge first. Seeded start."""
    k = min(rank, size)
    basis = torch.zeros(size, k + 1, dtype=torch.float64)
    start = torch.randn(size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    basis[:, 0] = start / start.norm()
    alphas, betas = [], []
    for j in range(k):
        w = operator(basis[:, j])
        alphas.append(float(w @ basis[:, j]))
        for _ in range(2):  # twice is enough (Kahan-Parlett)
            w = w - basis[:, :j + 1] @ (basis[:, :j + 1].T @ w)
        beta = float(w.norm())
        if beta <= 1e-12 * max(abs(a) for a in alphas):
            break
        betas.append(beta)
        basis[:, j + 1] = w / beta
    m = len(alphas)
    tridiagonal = (torch.diag(torch.tensor(alphas, dtype=torch.float64))
                   + torch.diag(torch.tensor(betas[:m - 1], dtype=torch.float64), 1)
                   + torch.diag(torch.tensor(betas[:m - 1], dtype=torch.float64), -1))
    values, vectors = torch.linalg.eigh(tridiagonal)
    return values, basis[:, :m] @ vectors


class LowRankSolver:
    """Approximate solves with the top of the spectrum: H ~= V diag(lambda) V^T + floor (I - V V^T).

    (H + damping I)^-1 b ~= V diag(1 / (lambda + damping)) V^T b + (b - V V^T b) / (floor + damping), V the
    Lanczos eigenvectors of H at theta (``rank`` of them, seeded). floor: the curvature assumed outside them,
    delta (the Hessian of R is >= delta I when the data term is convex). For many right-hand sides at once
    (self-influence of every pair), where CG would need one solve per pair; its accuracy against CG is
    measured in benchmarks/ecif_quality.py.
    """

    method = "lowrank"

    def __init__(self, problem: ContrastiveProblem, theta: torch.Tensor, rank: int, damping: float = 0.0,
                 seed: int = 0) -> None:
        self.eigenvalues, self.eigenvectors = lanczos(problem.hessian_operator(theta), problem.n_params, rank, seed)
        self.damping = damping
        self.floor = problem.delta

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        """x ~= (H + damping I)^-1 b for b (P,) or P x K; same shape, float64."""
        rhs = b[:, None] if b.ndim == 1 else b
        coefficients = self.eigenvectors.T @ rhs  # k x K
        x = (self.eigenvectors @ (coefficients / (self.eigenvalues + self.damping)[:, None])
             + (rhs - self.eigenvectors @ coefficients) / (self.floor + self.damping))
        return x[:, 0] if b.ndim == 1 else x


def make_solver(problem: ContrastiveProblem, theta: torch.Tensor, damping: float, exact_max_params: int,
                cg_tol: float = 1e-10, cg_max_iter: int = 1000, progress: bool = False) -> ExactSolver | CGSolver:
    """The exact solver when P <= exact_max_params, conjugate gradients otherwise."""
    if problem.n_params <= exact_max_params:
        return ExactSolver(problem.hessian(theta), damping)
    return CGSolver(problem, theta, damping, cg_tol, cg_max_iter, progress)
