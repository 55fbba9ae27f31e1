"""Multi-view near-duplicates (findings/views.py) and the streaming candidate index (findings/duplicate_index.py)."""
from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from influencegate.findings.duplicate_index import ViewIndex, code_candidates
from influencegate.findings.views import ViewMatch, view_pairs

FAMILIES = ("shift", "crop", "jpeg", "resize", "brightness")


def fields(n: int, side: int, seed: int) -> torch.Tensor:
    """n x 3 x (side * 1.25) x (side * 1.25) smooth random colour fields in [0, 1] (no two alike)."""
    g = torch.Generator().manual_seed(seed)
    big = F.interpolate(torch.randn(n, 3, 8, 8, generator=g), size=(int(side * 1.25),) * 2, mode="bicubic",
                        align_corners=False)
    lo, hi = big.amin(dim=(1, 2, 3), keepdim=True), big.amax(dim=(1, 2, 3), keepdim=True)
    return (big - lo) / (hi - lo)


def copy_of(big: torch.Tensor, side: int, kind: str, rng: np.random.Generator) -> torch.Tensor:
    """A planted copy (3 x side x side) of the centre window of `big` (3 x S x S, S >= 1.25 side)."""
    m = (big.shape[-1] - side) // 2
    img = big[:, m:m + side, m:m + side]
    if kind == "shift":
        d = max(1, int(round(0.1 * side)))
        return big[:, m + d:m + d + side, m - d:m - d + side]
    if kind == "crop":
        c = int(round(0.8 * side))
        return F.interpolate(img[None, :, 1:1 + c, 2:2 + c], size=(side, side), mode="bilinear", antialias=True)[0]
    if kind == "jpeg":
        buf = io.BytesIO()
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(buf, format="JPEG", quality=40)
        return torch.from_numpy(np.asarray(Image.open(buf), dtype=np.float32) / 255).permute(2, 0, 1)
    if kind == "resize":
        half = F.interpolate(img[None], scale_factor=0.5, mode="bilinear", antialias=True)
        return F.interpolate(half, size=(side, side), mode="bilinear")[0]
    return (img * 1.15 - 0.05).clamp(0, 1)


@pytest.mark.parametrize("side", [32, 64, 128])
def test_each_family_found_at_three_resolutions(side: int) -> None:
    rng = np.random.default_rng(side)
    big = fields(30, side, seed=side)
    m = (big.shape[-1] - side) // 2
    originals = big[:, :, m:m + side, m:m + side]
    copies = torch.stack([copy_of(big[i], side, kind, rng) for i, kind in enumerate(FAMILIES)])
    images = torch.cat([originals, copies])
    i, j, _ = view_pairs(images)
    found = set(zip(i.tolist(), j.tolist()))
    expected = {(k, 30 + k) for k in range(len(FAMILIES))}
    missed = [FAMILIES[k] for k in range(len(FAMILIES)) if (k, 30 + k) not in found]
    assert not missed, f"missed at {side} px: {missed}"
    assert found == expected  # nothing else linked among unrelated fields


def test_unrelated_images_and_flip_option() -> None:
    big = fields(20, 32, seed=3)
    imgs = big[:, :, 4:36, 4:36]
    mirrored = torch.cat([imgs, imgs[:3].flip(-1)])
    assert len(view_pairs(mirrored)[0]) == 0  # flips are off by default
    i, j, _ = view_pairs(mirrored, ViewMatch(flip=True))
    assert {(0, 20), (1, 21), (2, 22)} <= set(zip(i.tolist(), j.tolist()))


def test_candidate_index_against_exact_search() -> None:
    rng = np.random.default_rng(0)
    big = fields(200, 32, seed=7)
    imgs = big[:, :, 4:36, 4:36].clone()
    copies = rng.choice(200, 20, replace=False)
    originals = [int(o) for o in rng.choice(np.setdiff1d(np.arange(200), copies), 20, replace=False)]
    for c, o in zip(copies, originals):
        imgs[c] = copy_of(big[o], 32, FAMILIES[c % 5], rng)
    exact = set(zip(*(a.tolist() for a in view_pairs(imgs)[:2])))
    idx = ViewIndex()
    try:
        for s in range(0, 200, 64):
            idx.add(imgs[s:s + 64])
        ci, cj = idx.candidates(index="faiss-hnsw")
        ei, ej = idx.candidates(index="exact")
        i, j, _, checked = idx.pairs()
    finally:
        idx.close()
    planted = {(min(int(c), o), max(int(c), o)) for c, o in zip(copies, originals)}
    assert planted <= exact
    assert planted <= set(zip(ei.tolist(), ej.tolist()))
    assert planted <= set(zip(ci.tolist(), cj.tolist()))
    assert checked < 200 * 199 // 4  # the check ran on candidates, not on all pairs
    assert planted <= set(zip(i.tolist(), j.tolist())) <= exact | set(zip(ci.tolist(), cj.tolist()))


def test_code_candidates_exact_and_hnsw_agree() -> None:
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(500, 3, 64)).astype(np.float32)
    codes /= np.linalg.norm(codes, axis=-1, keepdims=True)
    a = set(zip(*(x.tolist() for x in code_candidates(codes, 5, "exact"))))
    b = set(zip(*(x.tolist() for x in code_candidates(codes, 5, "faiss-hnsw"))))
    assert len(a & b) >= 0.95 * len(a)


def test_streaming_index_memory_is_flat() -> None:
    """RAM kept per image is its codes (3 x 64 float16 = 384 B), not its thumbnail (3 x 48 x 48 float32 =
    27 KiB) nor its pixels: streaming 4,000 64 x 64 images must stay far below holding their thumbnails."""
    idx = ViewIndex()
    try:
        idx.add(torch.rand(8, 3, 64, 64))  # warm-up: projection matrix and first chunk
        tracemalloc.start()
        base, _ = tracemalloc.get_traced_memory()
        for s in range(20):
            idx.add(torch.rand(200, 3, 64, 64))
        kept = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        all_thumbs = 4000 * 3 * 48 * 48 * 4
        assert kept < all_thumbs / 20
        assert kept >= 4000 * 3 * 64 * 2 * 0.9  # the codes themselves are kept
        assert len(idx.codes()) == 4008
        assert idx.thumbnails(np.array([5, 4000])).shape == (2, 3, 48, 48)
    finally:
        idx.close()
