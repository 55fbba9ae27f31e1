"""pair_scan.pair_max_products against the brute-force max product of every pair, both ways."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from influencegate.findings import pair_scan


@pytest.mark.parametrize("store", ["function", "float16 tensor", "float32 tensor"])
@pytest.mark.parametrize("pad_slots,block", [(8192, 256), (12, 3)])
def test_pair_max_products_equals_brute_force(monkeypatch: pytest.MonkeyPatch, pad_slots: int, block: int,
                                              store: str) -> None:
    """Random pairs with a hub (image 0 in a third of them), images without any pair, partner counts that vary
    within a block (the count-sorted grouping and its padding), groups and blocks smaller than the data; the
    stored vectors read through a function (from disk) or gathered from a tensor in RAM of either dtype."""
    monkeypatch.setattr(pair_scan, "PAD_SLOTS", pad_slots)
    rng = np.random.default_rng(3)
    n, s, a, f = 40, 5, 3, 7
    own_vectors = torch.from_numpy(rng.normal(size=(n, s, f)).astype(np.float32))
    stored = rng.normal(size=(n, a, f)).astype(np.float16)
    i = rng.integers(1, 30, 150)
    j = rng.integers(1, 30, 150)
    i[::3] = 0
    keep = i != j
    ci, cj = np.minimum(i, j)[keep], np.maximum(i, j)[keep]
    calls: list[int] = []

    def own(rows: np.ndarray) -> torch.Tensor:
        calls.extend(rows.tolist())
        return own_vectors[torch.from_numpy(rows)]

    partners = {"function": stored.__getitem__, "float16 tensor": torch.from_numpy(stored),
                "float32 tensor": torch.from_numpy(stored.astype(np.float32))}[store]
    got = pair_scan.pair_max_products(ci, cj, n, block, own, partners, (a, f))
    ref = torch.from_numpy(stored.astype(np.float32))
    want = [max(float((own_vectors[x] @ ref[y].T).max()), float((own_vectors[y] @ ref[x].T).max()))
            for x, y in zip(ci.tolist(), cj.tolist())]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert sorted(calls) == sorted(set(ci.tolist()) | set(cj.tolist()))  # each searching image once
    assert pair_scan.pair_max_products(ci[:0], cj[:0], n, block, own, partners, (a, f)).shape == (0,)
