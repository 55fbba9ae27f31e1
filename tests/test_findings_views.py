"""Multi-view near-duplicates (findings/views.py) and the streaming candidate index (findings/duplicate_index.py)."""
from __future__ import annotations

import io
import os
import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from influencegate.findings import duplicate_index
from influencegate.findings.code_candidates import code_candidates, code_windows
from influencegate.findings.duplicate_index import ViewIndex
from influencegate.findings.view_search import (aligned_scores, kth_best, link, nearest_of, row_maxima,
                                               prune_floor, view_pairs)
from influencegate.findings.views import ViewMatch, view_bounds, view_descriptors

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
        ci, cj = idx.candidates(index="faiss-ivf")
        hi, hj = idx.candidates(index="faiss-hnsw")
        ei, ej = idx.candidates(index="exact")
        i, j, _, checked = idx.pairs()
    finally:
        idx.close()
    planted = {(min(int(c), o), max(int(c), o)) for c, o in zip(copies, originals)}
    assert planted <= exact
    assert planted <= set(zip(ei.tolist(), ej.tolist()))
    assert planted <= set(zip(ci.tolist(), cj.tolist()))
    assert planted <= set(zip(hi.tolist(), hj.tolist()))
    assert checked < 200 * 199 // 4  # the check ran on candidates, not on all pairs
    assert planted <= set(zip(i.tolist(), j.tolist())) <= exact | set(zip(ci.tolist(), cj.tolist()))


@pytest.mark.parametrize("index,share", [("faiss-hnsw", 0.95), ("faiss-ivf", 0.6)])
def test_code_candidates_against_the_exact_search(index: str, share: float) -> None:
    """The approximate indexes against the exact kNN of the same codes: every planted near copy (a code plus
    noise) is a candidate, and most of the exact kNN pairs are (IVF, 8 of 28 cells searched on structureless
    random codes, keeps the fewest; the near copies are what it must not miss)."""
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(1200, 3, 64)).astype(np.float32)
    codes[1100:] = codes[:100] + 0.1 * rng.normal(size=(100, 3, 64)).astype(np.float32)
    codes /= np.linalg.norm(codes, axis=-1, keepdims=True)
    a = set(zip(*(x.tolist() for x in code_candidates(codes, 5, "exact"))))
    b = set(zip(*(x.tolist() for x in code_candidates(codes, 5, index))))
    planted = {(k, 1100 + k) for k in range(100)}
    assert planted <= a and planted <= b
    assert len(a & b) >= share * len(a)
    assert code_candidates(codes[:1], 5, index)[0].size == 0
    with pytest.raises(ValueError, match="index must be"):
        code_candidates(codes, 5, "faiss-pq")


def test_ivf_candidates_do_not_depend_on_the_query_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """The IVF search visits the images by the cell of their whole-image code (for the cache); in id order, with
    query batches smaller than the data, it gives the same candidate pairs; the cells it reads are those faiss
    assigns."""
    from influencegate.findings import code_candidates as candidates_module
    from influencegate.findings.faiss_index import ivf_index

    rng = np.random.default_rng(4)
    codes = rng.normal(size=(900, 3, 16)).astype(np.float32)
    codes /= np.linalg.norm(codes, axis=-1, keepdims=True)
    monkeypatch.setattr(candidates_module, "QUERY_BATCH", 300)
    by_cell = code_candidates(codes, 4, "faiss-ivf", extra_k=(2,))
    searcher = ivf_index(codes[:, 0].copy(), 30, 4, train_per_cell=20)
    searcher.add(codes[:, 0].copy())
    assigned = searcher.quantizer.search(codes[:, 0].copy(), 1)[1][:, 0]
    np.testing.assert_array_equal(candidates_module._ivf_cells_of_rows(searcher, 900), assigned)
    monkeypatch.setattr(candidates_module, "_ivf_cells_of_rows", lambda searcher, n: np.zeros(n, np.int64))
    by_id = code_candidates(codes, 4, "faiss-ivf", extra_k=(2,))
    np.testing.assert_array_equal(by_cell[0], by_id[0])
    np.testing.assert_array_equal(by_cell[1], by_id[1])


def _reference_views(images: torch.Tensor, match: ViewMatch) -> torch.Tensor:
    """view_descriptors as first written (F.affine_grid + F.grid_sample per window): the separable
    operators must give the same vectors."""
    from influencegate.findings.resample import gauss_blur
    from influencegate.findings.views import _base

    d = match.side
    chans = _base(images, 3 * d, match.colour, "cpu")
    m, k, b = chans.shape[0], chans.shape[1], chans.shape[-1]
    base = chans.reshape(m * k, b, b)
    wins, _ = match.windows()
    theta = torch.zeros(len(wins), 2, 3)
    for w, (s, dy, dx) in enumerate(wins):
        theta[w, 0, 0], theta[w, 1, 1], theta[w, 0, 2], theta[w, 1, 2] = s, s, 2 * dx, 2 * dy
    out = min(d, b)
    grid = F.affine_grid(theta, [len(wins), 1, out, out], align_corners=False).reshape(1, len(wins) * out, out, 2)
    pre = gauss_blur(base, max(0.0, 0.5 * (b / out - 1.0)))
    views = F.grid_sample(pre[:, None], grid.expand(m * k, -1, -1, -1), mode="bilinear", padding_mode="border",
                          align_corners=False).reshape(m * k * len(wins), out, out)
    views = gauss_blur(views, float(match.blur) * out / d).reshape(m, k, len(wins), out, out)
    if match.flip:
        views = torch.cat([views, views.flip(-1)], dim=2)
    views = views - views.mean(dim=(3, 4), keepdim=True)
    views = views.transpose(1, 2).reshape(m, views.shape[2], -1)
    var = (views ** 2).mean(dim=2, keepdim=True)
    floor = torch.maximum(1e-3 * var[:, :1], torch.full_like(var[:, :1], 1e-12))
    return torch.where(var > floor, views * var.clamp_min(1e-30).rsqrt() / np.sqrt(views.shape[2]),
                       torch.zeros_like(views))


@pytest.mark.parametrize("shape", [(6, 3, 32, 32), (4, 3, 80, 64), (5, 1, 8, 8), (4, 3, 20, 20)])
def test_separable_views_equal_grid_sample_and_bound_them(shape: tuple[int, ...]) -> None:
    """view_descriptors (separable operators) = the grid_sample reference, in both bases the same dot
    products, `only` picks the same views; view_bounds' dot products bound every view dot product."""
    g = torch.Generator().manual_seed(sum(shape))
    x = F.avg_pool2d(torch.rand(*shape, generator=g), 3, 1, 1)
    x[0] = 0.5  # a flat image: zero views
    for match in (ViewMatch(), ViewMatch(flip=True), ViewMatch(colour=False, scales=(0.85,))):
        ref = _reference_views(x, match)
        views = view_descriptors(x, match)
        torch.testing.assert_close(views, ref, atol=2e-5, rtol=0)
        dct = view_descriptors(x, match, basis="dct")
        torch.testing.assert_close(torch.einsum("mvf,nwf->mnvw", dct, dct),
                                   torch.einsum("mvf,nwf->mnvw", ref, ref), atol=2e-5, rtol=0)
        anchors = match.windows()[1]
        torch.testing.assert_close(view_descriptors(x, match, only=anchors),
                                   ref[:, anchors + [len(match.windows()[0]) + a for a in anchors]
                                       if match.flip else anchors], atol=2e-5, rtol=0)
        bounds = view_bounds(x, match, low=4)
        gap = torch.einsum("mvf,nwf->mnvw", bounds, bounds) - torch.einsum("mvf,nwf->mnvw", ref, ref)
        assert float(gap.min()) > -1e-5
        assert float(bounds[0].abs().max()) == 0.0


def test_bounded_check_gives_the_links_of_the_exact_check() -> None:
    """ViewIndex.similarity(floor): every value is >= the exact s (the bound of the stored float16 anchors),
    equal to it where the bound reaches the floor; ViewIndex.decide on the values bounded at min(propose,
    nearest) gives the links of the aligned check (of the proposed pairs and each image's nearest candidate)
    + kth_best + link with the exact s of every candidate."""
    rng = np.random.default_rng(2)
    big = fields(300, 32, seed=13)
    imgs = big[:, :, 4:36, 4:36].clone()
    for c, o in zip(range(250, 300), range(50)):
        imgs[c] = copy_of(big[o], 32, FAMILIES[c % 5], rng)
    for match in (ViewMatch(), ViewMatch(flip=True), ViewMatch(ratio=0.5, k=2)):
        idx = ViewIndex(match)
        try:
            for s in range(0, 300, 128):
                idx.add(imgs[s:s + 128])
            ci, cj = idx.candidates(index="exact")
            exact = idx.similarity(ci, cj)
            for floor in (prune_floor(match), min(match.propose, match.nearest)):
                pruned = idx.similarity(ci, cj, floor=floor)
                assert (pruned >= exact - 1e-4).all()
                near = pruned >= floor
                np.testing.assert_allclose(pruned[near], exact[near], atol=1e-6)
                assert (~near).any() and (exact[~near] < floor).all()
            aligned = aligned_scores(ci, cj, exact, idx.thumbnails, match, nearest_of(ci, cj, exact, match))
            reference = link(ci, cj, aligned, kth_best(ci, cj, exact, 300, match.k), match)
            decided, scores = idx.decide(ci, cj, pruned)
            np.testing.assert_array_equal(decided, reference)
            np.testing.assert_allclose(scores, aligned, rtol=1e-6)
            assert reference.sum() >= 40
        finally:
            idx.close()


def test_streaming_index_memory_is_flat(monkeypatch: pytest.MonkeyPatch) -> None:
    """RAM kept per image is its codes (6 x 64 float16 = 768 B with the corner codes), not its thumbnail
    (3 x 48 x 48 float32 = 27 KiB) nor its pixels: streaming 4,000 64 x 64 images must stay far below holding
    their thumbnails. Code blocks of 500 images here (the default block is 96 MiB), so the kept codes are
    allocated in the loop."""
    monkeypatch.setattr(duplicate_index, "CODE_BLOCK", 500)
    idx = ViewIndex()
    try:
        idx.add(torch.rand(8, 3, 64, 64))  # warm-up: projection matrix and first chunk
        tracemalloc.start()
        base, _ = tracemalloc.get_traced_memory()
        for s in range(20):
            last = torch.rand(200, 3, 64, 64)
            idx.add(last)
        kept = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        alone = ViewIndex()
        alone.add(last)  # same seeded projection; rows 3,808-4,007 cross the block boundary at 4,000
        np.testing.assert_array_equal(idx.codes()[-200:], alone.codes())
        alone.close()
        all_thumbs = 4000 * 3 * 48 * 48 * 4
        assert kept < all_thumbs / 20
        assert kept >= 4000 * 6 * 64 * 2 * 0.9  # the codes themselves are kept
        assert len(idx.codes()) == 4008
        assert idx.thumbnails(np.array([5, 4000])).shape == (2, 3, 48, 48)
    finally:
        idx.close()



def test_stored_search_bounds_bound_the_view_similarity_and_give_the_same_links() -> None:
    """A kept index stores its search views' bounds (float16) at add() instead of computing them in the scan:
    each pair's bound stays within 2e-3 of the computed one and above its exact similarity less the margin, and
    the links are the same."""
    from influencegate.findings.duplicate_index import BOUND_MARGIN

    images, _ = planted_set(32, 60, seed=3)
    stored, computed = ViewIndex(search_bounds=True), ViewIndex()
    try:
        for idx in (stored, computed):
            idx.add(images[:50])
            idx.add(images[50:])
        ci, cj = computed.candidates(index="exact")
        bound = stored._scan(ci, cj, 16, exact=False)
        np.testing.assert_allclose(bound, computed._scan(ci, cj, 16, exact=False), atol=2e-3)
        assert (bound + BOUND_MARGIN >= computed._scan(ci, cj, 16, exact=True)).all()
        links, reference = stored.pairs(index="exact"), computed.pairs(index="exact")
        assert len(links[0]) >= 4 and all(np.array_equal(a, b) for a, b in zip(links, reference))
        assert os.path.getsize(stored.search_path) == len(images) * int(np.prod(stored.shapes()["search"])) * 2
    finally:
        stored.close()
        computed.close()
    assert not os.path.exists(stored.search_path)


# -- the Duplicates finding's paths ------------------------------------------------------------------------
def planted_set(side: int, n: int, seed: int) -> tuple[torch.Tensor, set[tuple[int, int]]]:
    """n unrelated smooth colour fields at `side` px plus one copy per family of the first originals:
    (images, planted pairs (original, copy))."""
    rng = np.random.default_rng(seed)
    big = fields(n, side, seed=seed)
    m = (big.shape[-1] - side) // 2
    copies = torch.stack([copy_of(big[k], side, kind, rng) for k, kind in enumerate(FAMILIES)])
    images = torch.cat([big[:, :, m:m + side, m:m + side], copies])
    return images, {(k, n + k) for k in range(len(FAMILIES))}


def duplicate_scores(n: int) -> "pd.DataFrame":
    import pandas as pd
    return pd.DataFrame({"sample_id": [f"s{i:04d}" for i in range(n)], "influence": np.ones(n)})


def found_pairs(out: "pd.DataFrame", pairs: set[tuple[int, int]]) -> set[tuple[int, int]]:
    g = out["duplicate_group"].to_numpy()
    return {(a, b) for a, b in pairs if g[a] >= 0 and g[a] == g[b]}


@pytest.mark.parametrize("side,settings,path", [
    (8, {}, ("pixels", "exact")),
    (32, {}, ("views", "exact")),
    (32, {"view_exact_max_samples": 40}, ("views", "index")),
])
def test_duplicates_finding_picks_its_path_and_finds_planted_copies(side, settings, path) -> None:
    """Small images -> the pixel matcher; larger -> the views, all pairs; many -> the streaming index. Each
    path finds the planted copies (at 8 px: the shift, brightness and a 1-pixel shift with zero fill) and
    names itself in the summary and the text."""
    from influencegate.findings import Duplicates
    from influencegate.findings.duplicates import DuplicatesFinding
    from influencegate.findings.registry import FindingInputs

    if side == 8:
        rng = np.random.default_rng(0)
        originals = torch.as_tensor(rng.uniform(size=(60, 1, 8, 8)), dtype=torch.float32)
        shifted = torch.zeros(1, 1, 8, 8)
        shifted[..., 1:, :] = originals[0, :, :-1]
        images = torch.cat([originals, shifted, (originals[1:2] * 0.9 + 0.05), originals[2:3] + 0.01])
        planted = {(0, 60), (1, 61), (2, 62)}
    else:
        images, planted = planted_set(side, 60, seed=side)
    table = duplicate_scores(len(images))
    dup = Duplicates(**settings)
    out = dup.find(table, None, images=images)
    summary = dup.summary()
    assert (summary["matcher"], summary["search"]) == path
    assert (summary["candidates"] > 0) == (path[1] == "index")
    assert summary["candidates"] < len(images) * (len(images) - 1) // 4  # candidates, not all pairs
    assert found_pairs(out, planted) == planted
    assert int(out["is_duplicate"].sum()) == len(planted)  # nothing unrelated linked
    text = DuplicatesFinding().run(FindingInputs(table, None, images, None), dup).text
    assert {"pixels": "pixel matcher", "views": "multi-view matcher"}[path[0]] in text
    assert ("candidate pairs from the streaming index" in text) == (path[1] == "index")


def test_duplicates_views_stay_on_images_above_the_pixel_guard() -> None:
    """image_max_samples guards the O(M^2) pixel matcher only: with larger images near="auto" keeps
    comparing images (through the index) instead of falling back to embeddings; the index cannot run the
    pixel matcher."""
    from influencegate.findings import Duplicates

    images, planted = planted_set(32, 40, seed=5)
    table = duplicate_scores(len(images))
    dup = Duplicates(image_max_samples=10, view_exact_max_samples=10)
    out = dup.find(table, None, images=images)
    s = dup.summary()
    assert s["signals"] == "image" and not s["auto_fallback"] and s["search"] == "index"
    assert found_pairs(out, planted) == planted
    with pytest.raises(ValueError, match="pixel matcher"):
        Duplicates(search="index").find(duplicate_scores(10), None, images=torch.rand(10, 1, 8, 8))
    with pytest.raises(ValueError, match="matcher must be"):
        Duplicates(matcher="tiles")


def test_index_similarity_equals_the_pairwise_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """ViewIndex.similarity (each image's views computed once, halves sorted by image, stored float16
    anchors) gives views.pair_similarity of the stored thumbnails, with and without flips, across blocks and
    padded row groups smaller than the data (a hub row larger than a group alone)."""
    from influencegate.findings import pair_scan
    from influencegate.findings.view_search import pair_similarity
    from influencegate.findings.views import view_descriptors

    monkeypatch.setattr(pair_scan, "PAD_SLOTS", 40)

    imgs = fields(70, 32, seed=11)[:, :, 4:36, 4:36]
    for match in (ViewMatch(), ViewMatch(flip=True)):
        idx = ViewIndex(match)
        try:
            for s in range(0, 70, 32):
                idx.add(imgs[s:s + 32])
            ci, cj = idx.candidates(index="exact")
            sims = idx.similarity(ci, cj, block=16)
            views = view_descriptors(idx.thumbnails(np.arange(70)), match)
            np.testing.assert_allclose(sims, pair_similarity(views[ci], views[cj], match).numpy(), atol=2e-4)
        finally:
            idx.close()


def test_index_candidates_meet_off_centre_crops() -> None:
    """Crops to 78% (25 of 32 px) at the corners of their original (7 px off: 0.11 of the side), resized back:
    the crop's whole-image code is near its original's off-centre windows, not its centred anchors, so without
    the corner codes (ViewMatch.code_corners, code_candidates.code_windows) the index misses half of them at
    the candidate stage (20 of 40); with them all but at most one are candidates (exact kNN of the codes), at
    fewer than 2x the candidates. (Crops to 75% at the very corner: 14 -> 31 of 40 at 0.05, 40 at 0.1.)"""
    g = torch.Generator().manual_seed(11)
    big = F.interpolate(torch.randn(240, 3, 12, 12, generator=g), size=(32, 32), mode="bicubic", align_corners=False)
    images = big.clone()
    corners = ((0, 0), (0, 7), (7, 0), (7, 7))
    for k in range(40):
        oy, ox = corners[k % 4]
        images[200 + k] = F.interpolate(big[k:k + 1, :, oy:oy + 25, ox:ox + 25], size=(32, 32), mode="bicubic",
                                        align_corners=False)[0]
    planted = {(k, 200 + k) for k in range(40)}
    found, counts = [], []
    for match in (ViewMatch(code_corners=0.0), ViewMatch()):
        idx = ViewIndex(match)
        try:
            idx.add(images)
            ci, cj = idx.candidates(index="exact")
        finally:
            idx.close()
        found.append(len(planted & set(zip(ci.tolist(), cj.tolist()))))
        counts.append(len(ci))
    assert found[0] <= 24 and found[1] >= 39, found
    assert counts[1] < 2 * counts[0]
    assert code_windows(ViewMatch(code_corners=0.0)) == ViewMatch().windows()[1]
    wins = ViewMatch().windows()[0]  # with corners: the whole image, the 0.8 anchor and its 4 corner windows
    assert [wins[w][0] for w in code_windows(ViewMatch())] == [1.0] + [min(ViewMatch().scales)] * 5
    with pytest.raises(ValueError, match="code_corners"):
        code_windows(ViewMatch(code_corners=0.07))


def test_view_bounds_are_the_low_frequencies_and_rest_of_the_views() -> None:
    """view_bounds = each DCT view's (view_descriptors: no cancellation) low x low coefficients per channel and
    the norm of the rest, to 1e-5, also on low-contrast images (a bright image, texture 1% of its mean), where
    the constant coefficient's square taken from the total energy cancels (the earlier code: 0.7 off here; the
    check's BOUND_MARGIN is 5e-3)."""
    g = torch.Generator().manual_seed(5)
    x = torch.cat([torch.rand(4, 3, 40, 40, generator=g), 0.9 + 0.01 * torch.rand(4, 3, 100, 90, generator=g)[
        ..., :40, :40]])
    for match in (ViewMatch(), ViewMatch(colour=False), ViewMatch(flip=True)):
        low, chans = 5, 3 if match.colour else 1
        dct = view_descriptors(x, match, basis="dct").double()  # m x V x (K D D)
        cut = dct.reshape(*dct.shape[:2], chans, match.side, match.side)[..., :low, :low].flatten(2)
        rest = (1.0 - cut.square().sum(-1, keepdim=True)).clamp_min(0.0).sqrt()
        torch.testing.assert_close(view_bounds(x, match, low=low).double(), torch.cat([cut, rest], -1),
                                   atol=1e-5, rtol=0)


def test_row_maxima_follow_lexsort() -> None:
    """row_maxima = each row's first k entries in np.lexsort((-vals, rows)) order exactly: ties kept in array
    order, -0.0 = 0.0, tiny and negative values, many rows, rows with fewer than k entries or none; kth_best and
    nearest_of rest on it."""
    rng = np.random.default_rng(1)
    atoms = np.array([-2.0, -1.0, -0.0, 0.0, 0.5, 1.0, 0.25, -0.75, 3e-8, -1e-30, 1e-45], np.float32)
    for trial in range(12):
        p, n, k = int(rng.integers(1, 4000)), int(rng.integers(1, 300)), int(rng.integers(1, 5))
        rows = rng.integers(0, n, p)
        vals = rng.choice(atoms, p) if trial % 2 else rng.standard_normal(p).astype(np.float32)
        order = np.lexsort((-vals, rows))
        want = np.full((n, k), -1)
        for row in range(n):
            firsts = order[rows[order] == row][:k]
            want[row, :len(firsts)] = firsts
        assert np.array_equal(row_maxima(rows, vals, n, k), want)


def test_kth_best_is_each_images_kth_highest_pair_similarity() -> None:
    """kth_best against the k-th value of each image's similarities sorted by hand; -1 with fewer than k pairs
    (image 7 has none); no pairs at all gives -1 everywhere."""
    rng = np.random.default_rng(4)
    i, j = rng.integers(0, 7, 60), rng.integers(0, 7, 60)
    s = rng.choice(np.array([0.1, 0.5, 0.5, 0.9], np.float32), 60)
    for k in (1, 3, 20):
        want = [sorted(np.concatenate([s[i == r], s[j == r]]), reverse=True) for r in range(8)]
        want = [w[k - 1] if len(w) >= k else -1.0 for w in want]
        np.testing.assert_array_equal(kth_best(i, j, s, 8, k), np.asarray(want, np.float32))
    assert np.array_equal(kth_best(i[:0], j[:0], s[:0], 3, 2), np.full(3, -1.0, np.float32))
