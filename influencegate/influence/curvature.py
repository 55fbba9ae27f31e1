"""Curvature of the Influence-SSL objective in each layer's projected space, and its damped inverse.

H_l = (1/M) sum_m vec(g~_m) vec(g~_m)^T over the M = N x K (sample, draw) pairs, per layer l (block
diagonal across layers). Every estimator is fitted from sums and counts, so shards can fit independently
and `merge`. Sums are float64. Eigendecompositions run in float64, except raw's, which runs in the dtype of
the gradient rows its sums were formed from (float32 by default, see `RawCurvature.finalize`). Damping: an
absolute lambda, or None for the per-layer heuristic lambda_l = 0.1 x mean eigenvalue of H_l.
"""
from __future__ import annotations

import torch

from influencegate.influence.capture import FactorSums

HEURISTIC_DAMPING = 0.1


#: Column block of `gram`: the products of the blocks on and above the diagonal are formed, the rest mirrored.
GRAM_BLOCK = 256


def gram(rows: torch.Tensor, block: int = GRAM_BLOCK) -> torch.Tensor:
    """rows^T rows, M x D -> D x D, from the blocks on and above the diagonal only (for D = 4 blocks, 10 of 16
    block products: 62.5% of the multiplications; every entry is the same dot product over the M rows)."""
    dim = rows.shape[1]
    if dim <= block:
        return rows.T @ rows
    out = torch.empty(dim, dim, dtype=rows.dtype, device=rows.device)
    for start in range(0, dim, block):
        stop = min(dim, start + block)
        out[start:stop, start:] = rows[:, start:stop].T @ rows[:, start:]
        out[stop:, start:stop] = out[start:stop, stop:].T
    return out


def _damping(mean_eigenvalue: float, damping: float | None) -> float:
    return HEURISTIC_DAMPING * mean_eigenvalue if damping is None else float(damping)


class LayerCurvature:
    """Base class: accumulate per-sample projected gradients, then score with the damped inverse.

    `needs_factors`: the estimator needs the Kronecker factors (a first pass) before `update`.
    `needs_gradients`: `update` must see the per-sample gradients of the whole dataset.
    """

    needs_factors = False
    needs_gradients = True

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape
        self.count = 0.0
        self.damping_value = float("nan")
        self._cast_cache: dict[tuple[str, torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def _cast(self, attr: str, like: torch.Tensor) -> torch.Tensor:
        """The float64 statistic `attr` in the device and dtype of `like` (cached: scoring reuses it for every
        batch). Scores are computed in the gradients' dtype, float32 by default: the float64 matmul was 2x
        slower and the ranking does not change (errors ~1e-6 relative)."""
        source, key = getattr(self, attr), (attr, like.device, like.dtype)
        if key not in self._cast_cache or self._cast_cache[key][0] is not source:
            self._cast_cache[key] = (source, source.to(like.device, like.dtype))
        return self._cast_cache[key][1]

    def update(self, g: torch.Tensor) -> None:
        """Add a batch of projected gradients, B x r_out x r_in."""
        raise NotImplementedError

    def finalize(self, damping: float | None) -> None:
        """Fix the damped inverse from the sums (after all updates)."""
        raise NotImplementedError

    def score(self, g: torch.Tensor) -> torch.Tensor:
        """g^T (H + lambda I)^-1 g per sample, g: B x r_out x r_in -> B (float64)."""
        raise NotImplementedError

    def merge(self, other: "LayerCurvature") -> None:
        """Add another shard's sums (same class and shape) into this one; then `finalize` again.
        Valid for identity, diagonal and raw; KFAC/EK-FAC shards merge their `FactorSums` instead (their
        eigenbases differ per shard)."""
        for key, value in vars(other).items():
            if isinstance(value, torch.Tensor) and key.endswith("_sum"):
                getattr(self, key).add_(value)
        self.count += other.count


class IdentityCurvature(LayerCurvature):
    """H = I, no damping: the score is the squared norm of the projected gradient."""

    needs_gradients = False

    def update(self, g: torch.Tensor) -> None:
        self.count += g.shape[0]

    def finalize(self, damping: float | None) -> None:
        self.damping_value = 0.0

    def score(self, g: torch.Tensor) -> torch.Tensor:
        return g.double().pow(2).sum(dim=(1, 2))


class DiagonalCurvature(LayerCurvature):
    """The diagonal of H: mean of squared projected-gradient entries."""

    def __init__(self, shape: tuple[int, int]) -> None:
        super().__init__(shape)
        self.sq_sum = torch.zeros(shape, dtype=torch.float64)

    def update(self, g: torch.Tensor) -> None:
        self.sq_sum += g.double().pow(2).sum(0).cpu()
        self.count += g.shape[0]

    def finalize(self, damping: float | None) -> None:
        diag = self.sq_sum / max(self.count, 1.0)
        self.damping_value = _damping(diag.mean().item(), damping)
        self.inverse = 1.0 / (diag + self.damping_value)

    def score(self, g: torch.Tensor) -> torch.Tensor:
        return (g.pow(2) * self._cast("inverse", g)).sum(dim=(1, 2)).double()


class RawCurvature(LayerCurvature):
    """The full projected covariance H, D x D with D = r_out r_in, and its damped inverse.

    inverse_rank: None = the exact inverse (H + lambda I)^-1 (D^2 work per scored row). An integer m < D
    keeps the top-m eigenpairs exactly and gives the other D - m directions one weight
    w = sum_(i>m) e_i / (e_i + lambda) / sum_(i>m) e_i, which makes the expected contribution of those directions
    exact for gradients distributed like the data (E[(q_i.g)^2] = e_i):
    score = sum_(i<=m) (q_i.g)^2 / (e_i + lambda) + w (|g|^2 - sum_(i<=m) (q_i.g)^2), D m work per row.
    (Weighting them by the mean of 1/(e_i + lambda) instead over-weights the rest a hundredfold: digits, m = 128,
    Spearman 0.24 against the exact score.) On digits (SmallCNN, r = 32, D up to 1024) m = 128 ranks like the exact inverse to
    Spearman 0.9985 (m = 64: 0.996, 256: 0.9998) at an 8x cheaper score.
    """

    #: dtype of the eigendecomposition in `finalize`: that of the rows `update` last saw (float64 until then, and
    #: for a fit restored from a saved state, which `finalize`s again only after `update`)
    _eigh_dtype = torch.float64

    def __init__(self, shape: tuple[int, int], inverse_rank: int | None = None) -> None:
        super().__init__(shape)
        dim = shape[0] * shape[1]
        self.inverse_rank = inverse_rank
        self.outer_sum = torch.zeros(dim, dim, dtype=torch.float64)

    def update(self, g: torch.Tensor) -> None:
        flat = g.reshape(g.shape[0], -1)
        self.outer_sum += gram(flat).double().cpu()
        self.count += g.shape[0]
        self._eigh_dtype = torch.float64 if g.dtype == torch.float64 else torch.float32

    def finalize(self, damping: float | None) -> None:
        """Eigendecompose H = outer_sum / count in the rows' dtype (float32 by default: the sums are float32
        products of float32 gradients and the scores float32 products with the kept eigenvectors, so a float64
        eigh adds nothing but time, 2x at D = 1,024; scores within 1e-6 relative of float64's on 600 digits),
        and fix the damped inverse (kept eigenpairs and rest weight in float64). The damping's mean eigenvalue is
        trace(H) / D, in float64."""
        h = self.outer_sum / max(self.count, 1.0)
        evals, evecs = (t.double() for t in torch.linalg.eigh(h.to(self._eigh_dtype)))  # ascending
        self.damping_value = _damping(h.diagonal().mean().item(), damping)
        evals = evals.clamp_min(0)
        dim, keep = len(evals), len(evals) if self.inverse_rank is None else min(int(self.inverse_rank), len(evals))
        if keep == dim:
            self.inverse = (evecs / (evals + self.damping_value)) @ evecs.T
            return
        rest = evals[: dim - keep]
        rest_weight = (rest / (rest + self.damping_value)).sum() / rest.sum().clamp_min(1e-300)
        self.basis = evecs[:, dim - keep:]  # D x m, the top-m eigenvectors
        self.basis_weights = 1.0 / (evals[dim - keep:] + self.damping_value) - rest_weight
        self.rest_weight = rest_weight.reshape(1)
        self.inverse = None

    def score(self, g: torch.Tensor) -> torch.Tensor:
        flat = g.reshape(g.shape[0], -1)
        if self.inverse is not None:
            return ((flat @ self._cast("inverse", flat)) * flat).sum(1).double()
        # |g|^2 as a squared norm and the weighted sum as a product: no B x D or B x m temporaries
        squared_norm = torch.linalg.vector_norm(flat, dim=1).square_()
        projected = (flat @ self._cast("basis", flat)).square_()
        return (squared_norm * self._cast("rest_weight", flat) + projected @ self._cast("basis_weights", flat)).double()


class KfacCurvature(LayerCurvature):
    """H ~ S (x) A from the Kronecker factors; eigenvalues are products e_S,i x e_A,j."""

    needs_factors = True
    needs_gradients = False

    def set_factors(self, factors: FactorSums) -> None:
        """Eigendecompose A = a_sum / a_rows and S = s_sum / s_count (float64)."""
        a = factors.a_sum.cpu() / max(factors.a_rows, 1.0)
        s = factors.s_sum.cpu() / max(factors.s_count, 1.0)
        self.e_a, self.q_a = torch.linalg.eigh(a)
        self.e_s, self.q_s = torch.linalg.eigh(s)
        self.count = factors.s_count

    def eigenvalues(self) -> torch.Tensor:
        return torch.outer(self.e_s.clamp_min(0), self.e_a.clamp_min(0))

    def rotate(self, g: torch.Tensor) -> torch.Tensor:
        """g~ in the Kronecker eigenbasis: Q_S^T g~ Q_A, B x r_out x r_in."""
        q_s, q_a = self._cast("q_s", g), self._cast("q_a", g)
        b, r_out, r_in = g.shape
        right = (g.reshape(b * r_out, r_in) @ q_a).reshape(b, r_out, r_in)  # two plain 2-D matmuls: the
        both = q_s.T @ right.transpose(0, 1).reshape(r_out, b * r_in)       # batched form is much slower on CPU
        return both.reshape(r_out, b, r_in).transpose(0, 1).double()

    def update(self, g: torch.Tensor) -> None:
        """KFAC needs no per-sample pass: its statistics are the factors."""

    def finalize(self, damping: float | None) -> None:
        lam = self.eigenvalues()
        self.damping_value = _damping(lam.mean().item(), damping)
        self.inverse_eigenvalues = 1.0 / (lam + self.damping_value)

    def score(self, g: torch.Tensor) -> torch.Tensor:
        rotated = self.rotate(g)
        return (rotated.pow(2) * self._cast("inverse_eigenvalues", rotated)).sum(dim=(1, 2))


class EkfacCurvature(KfacCurvature):
    """KFAC eigenbasis with eigenvalues refitted on the per-sample projected gradients (George et al. 2018)."""

    needs_gradients = True

    def set_factors(self, factors: FactorSums) -> None:
        super().set_factors(factors)
        self.count = 0.0
        self.eig_sum = torch.zeros(self.shape, dtype=torch.float64)

    def update(self, g: torch.Tensor) -> None:
        self.eig_sum += self.rotate(g).pow(2).sum(0).cpu()
        self.count += g.shape[0]

    def eigenvalues(self) -> torch.Tensor:
        return self.eig_sum / max(self.count, 1.0)


CURVATURE_CLASSES: dict[str, type[LayerCurvature]] = {
    "identity": IdentityCurvature, "diagonal": DiagonalCurvature, "raw": RawCurvature,
    "kfac": KfacCurvature, "ekfac": EkfacCurvature,
}

