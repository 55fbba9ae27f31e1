"""The texture test of the aligned check (findings/edge_residual.py): the 1-D profile fit against direct
row / column means, the gradient direction of a known ramp, and the rule it serves: two distinct patches of
one straight edge are not linked (they are without the test), a real 1-px shift of one of them is."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from influencegate.findings.align import align_pairs
from influencegate.findings.edge_residual import gradient_direction, profile_residuals, residual_ncc, solve_one_thread
from influencegate.findings.view_search import view_pairs
from influencegate.findings.views import ViewMatch


def textured(n: int, side: int, seed: int) -> torch.Tensor:
    """n x 3 x side x side smooth random fields (bicubic from side / 3 noise)."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.randn(n, 3, side // 3, side // 3, generator=g), size=(side, side), mode="bicubic",
                         align_corners=False)


def edge_photo(amplitude: float, n: int = 160) -> torch.Tensor:
    """3 x n x n: a vertical edge (tanh, 2 px wide) down the middle plus `amplitude` x a smooth texture."""
    x = torch.arange(n, dtype=torch.float32)
    edge = torch.tanh((x - n / 2) / 2.0)[None, None, :].expand(3, n, n)
    return edge + amplitude * textured(1, n, seed=0)[0]


@pytest.mark.parametrize("phi,axis", [(0.0, 2), (math.pi / 2, 3)])
def test_profile_fit_along_an_axis_is_the_mean_across_it(phi: float, axis: int) -> None:
    """At phi = 0 (gradient along x) any profile of x is in the basis, so the residual is each channel minus
    its column means; at pi / 2 minus its row means (numpy, directly)."""
    images = textured(2, 12, seed=1)
    got = profile_residuals(images, torch.full((2,), phi)).numpy()
    x = images.double().numpy()
    want = x - x.mean(axis=axis, keepdims=True)
    want = want - want.mean(axis=(2, 3), keepdims=True)
    assert np.allclose(got, want.reshape(2, 3, -1).transpose(0, 2, 1), atol=1e-5)  # RIDGE: ~1e-6 here


def test_profile_fit_at_an_oblique_angle_equals_dense_least_squares() -> None:
    """Against numpy's lstsq on the dense design matrix of hat functions, written out here."""
    images = textured(2, 10, seed=4)
    phi = torch.tensor([0.4, -1.1])
    got = profile_residuals(images, phi).numpy()
    axis = np.arange(10) - 4.5
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    for n in range(2):
        u = (yy * np.sin(float(phi[n])) + xx * np.cos(float(phi[n]))).reshape(-1)
        knots = np.arange(np.floor(u.min()) - 1, np.ceil(u.max()) + 2)
        design = np.maximum(0.0, 1.0 - np.abs(u[:, None] - knots[None, :]))
        x = images[n].double().numpy().reshape(3, -1).T
        fit = design @ np.linalg.lstsq(design, x, rcond=None)[0]
        want = (x - fit) - (x - fit).mean(0)
        assert np.allclose(got[n], want, atol=1e-5)


def test_gradient_direction_of_a_ramp() -> None:
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    angle = math.radians(30)
    ramp = (xx * math.cos(angle) + yy * math.sin(angle))[None, None].expand(1, 3, 16, 16)
    assert abs(float(gradient_direction(ramp)[0]) - angle) < 1e-6


def test_residual_ncc_of_a_copy_a_pure_profile_and_unrelated_texture() -> None:
    images = textured(3, 24, seed=2)
    assert torch.allclose(residual_ncc(images, images), torch.ones(3), atol=1e-5)
    ramp = torch.linspace(0, 1, 24)[None, None, None, :].expand(3, 3, 24, 24)
    assert torch.all(residual_ncc(ramp, ramp + 0.01 * images) == 0.0)  # the ramp alone: no texture evidence
    assert torch.all(residual_ncc(images, textured(3, 24, seed=3)).abs() < 0.5)
    with pytest.raises(ValueError):
        residual_ncc(images, images[:, :, :12, :12])
    with pytest.raises(ValueError):
        ViewMatch(texture=1.5)


def test_two_patches_of_one_edge_are_not_linked_a_shift_is() -> None:
    photo = edge_photo(0.05)
    a, b, shifted = photo[:, 20:52, 64:96], photo[:, 100:132, 64:96], photo[:, 21:53, 65:97]
    x = torch.stack([a, b, shifted])
    found = align_pairs(x[[0, 0]], x[[1, 2]], ViewMatch().alignment())
    assert torch.all(found["score"] > 0.995)  # the score alone cannot tell them apart
    assert found["residual"][0] < 0.3 and found["residual"][1] > 0.99
    i, j, _ = view_pairs(x)
    assert list(zip(i.tolist(), j.tolist())) == [(0, 2)]
    i, j, _ = view_pairs(x, replace(ViewMatch(), texture=-1.0))  # the rule without the texture test
    assert (0, 1) in set(zip(i.tolist(), j.tolist()))


def test_the_solve_runs_on_one_thread_restores_the_pool_and_changes_nothing() -> None:
    """solve_one_thread: the same solution as torch.linalg.solve on the pool's threads (the texture test's
    systems, bit for bit up to float64 rounding), the thread count restored after it, also after an error."""
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        gen = torch.Generator().manual_seed(5)
        m = torch.randn(64, 40, 40, dtype=torch.float64, generator=gen)
        a = m @ m.transpose(1, 2) + 40 * torch.eye(40, dtype=torch.float64)
        b = torch.randn(64, 40, 3, dtype=torch.float64, generator=gen)
        seen = []
        real = torch.linalg.solve

        def spy(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return real(x, y)

        want = real(a, b)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch.linalg, "solve", spy)
            got = solve_one_thread(a, b)
        assert seen == [1] and torch.get_num_threads() == 2
        assert torch.allclose(got, want, rtol=0, atol=1e-12)
        with pytest.raises(RuntimeError):
            solve_one_thread(a[:, :3], b)  # shapes that do not match
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)
