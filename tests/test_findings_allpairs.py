"""The all-pairs view search (findings/view_search.view_pairs) streams its aligned check: the same links as the
rule applied to the whole similarity matrix at once, and never all proposed pairs handed to the aligned check
or held at once (issue 14: the all-pairs path must not take a user's machine down)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from PIL import Image

from influencegate.findings import view_search
from influencegate.findings.view_search import (TILE_FLOATS, aligned_scores, align_thumbnails, all_views,
                                                block_similarity, link, tile_side, view_pairs)
from influencegate.findings.views import ViewMatch, anchor_index, search_count


def photo_windows() -> torch.Tensor:
    """72 x 3 x 32 x 32: two clusters of 20 overlapping windows of one photo (shifts up to 8 px: many
    proposals, absolute links and relative-rule rejections), 16 windows far apart and a JPEG (quality 30)
    copy of each (links by the relative rule among them)."""
    photo = torch.from_numpy(skimage.data.astronaut().astype(np.float32) / 255).permute(2, 0, 1)
    rng = np.random.default_rng(0)

    def cluster(y0: int, x0: int) -> list[torch.Tensor]:
        return [photo[:, y:y + 32, x:x + 32] for y, x in zip(rng.integers(y0, y0 + 8, 20), rng.integers(x0, x0 + 8, 20))]

    def jpeg(img: torch.Tensor) -> torch.Tensor:
        buf = io.BytesIO()
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(buf, format="JPEG", quality=30)
        return torch.from_numpy(np.asarray(Image.open(buf), dtype=np.float32) / 255).permute(2, 0, 1)

    lone = [photo[:, y:y + 32, x:x + 32] for y in range(20, 480, 60) for x in (20, 440)]
    return torch.stack(cluster(100, 160) + cluster(300, 300) + lone + [jpeg(w) for w in lone])


def whole_matrix_rule(images: torch.Tensor,
                      match: ViewMatch) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The linking rule on the whole M x M view similarity matrix at once (the reference): each image's k-th
    best from its full row, every pair >= propose and every image's nearest (its row's argmax, from
    ViewMatch.nearest) aligned in one list: (i, j, a) of those pairs and the bool P `link` of them."""
    views = all_views(images, match)
    sims = block_similarity(views, views, match)
    sims.fill_diagonal_(-2.0)
    kth = sims.topk(match.k, dim=1).values[:, -1].numpy()
    nearest = torch.zeros_like(sims, dtype=torch.bool)
    nearest[torch.arange(len(sims)), sims.argmax(dim=1)] = True
    nearest = (nearest | nearest.T) & (sims >= match.nearest)
    ii, jj = torch.nonzero(torch.triu((sims >= match.propose) | nearest, diagonal=1), as_tuple=True)
    i, j, s = ii.numpy(), jj.numpy(), sims[ii, jj].numpy()
    a = aligned_scores(i, j, s, align_thumbnails(images, match), match, nearest[ii, jj].numpy())
    return i, j, a, link(i, j, a, kth, match)


@pytest.mark.parametrize("propose", [0.9, 0.995])
def test_streamed_search_links_as_the_whole_matrix_rule(monkeypatch: pytest.MonkeyPatch, propose: float) -> None:
    match = ViewMatch(propose=propose)
    images = photo_windows()
    i, j, a, ok = whole_matrix_rule(images, match)
    assert (ok & (a < match.threshold)).any() and ((a >= match.floor) & ~ok).any()  # both sides of the relative rule are exercised
    monkeypatch.setattr(view_search, "ALIGN_BATCH", 16)  # many batches, many partial k-th bests
    counts: dict[str, int] = {}
    gi, gj, ga = view_pairs(images, match, block_size=16, counts=counts)
    assert list(zip(gi.tolist(), gj.tolist())) == sorted(zip(i[ok].tolist(), j[ok].tolist()))
    order = np.lexsort((j[ok], i[ok]))
    assert np.allclose(ga, a[ok][order], atol=1e-6)
    assert counts["proposed"] + counts["nearest"] == counts["aligned"] == len(i)
    assert counts["nearest"] > 0 or propose < 0.99  # the nearest-neighbour pairs are exercised


def edge_patches(n: int = 30) -> torch.Tensor:
    """n x 3 x 32 x 32 patches down one vertical edge (tanh, 2 px wide) plus a 0.05 smooth texture: every
    pair looks alike to the views (proposed), the texture test rejects them (edge_residual.py)."""
    g = torch.Generator().manual_seed(0)
    side = 32 + 4 * n
    x = torch.arange(48, dtype=torch.float32)
    edge = torch.tanh((x - 24) / 2.0)[None, None, :].expand(3, side, 48)
    texture = F.interpolate(torch.randn(1, 3, side // 3, 16, generator=g), size=(side, 48), mode="bicubic",
                            align_corners=False)[0]
    photo = edge + 0.05 * texture
    return torch.stack([photo[:, 4 * r:4 * r + 32, 8:40] for r in range(n)])


def test_aligned_check_never_gets_all_proposed_pairs_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    batch, block = 16, 8
    monkeypatch.setattr(view_search, "ALIGN_BATCH", batch)
    sizes: list[int] = []

    def recorded(i: np.ndarray, *rest: object, **named: object) -> np.ndarray:
        sizes.append(len(i))
        return aligned_scores(i, *rest, **named)

    monkeypatch.setattr(view_search, "aligned_scores", recorded)
    counts: dict[str, int] = {}
    i, _, _ = view_pairs(edge_patches(), block_size=block, counts=counts)
    bound = batch + block * block  # one batch plus one tile's proposals
    assert counts["proposed"] > 4 * bound  # holding them all would break the bounds below
    assert sum(sizes) == counts["proposed"] + counts["nearest"] == counts["aligned"]  # nearest: <= 1 per image
    assert max(sizes) <= bound
    assert counts["held_max"] <= bound + len(i)


def test_tiles_are_narrowed_to_the_budget_without_changing_links(monkeypatch: pytest.MonkeyPatch) -> None:
    match = ViewMatch()
    per_pair = search_count(match) * len(anchor_index(match))
    side = tile_side(2048, match)  # the Duplicates finding's block_size
    assert side * side * per_pair <= TILE_FLOATS < (side + 1) ** 2 * per_pair
    assert tile_side(100, match) == 100
    with pytest.raises(ValueError):
        tile_side(0, match)
    images = photo_windows()
    wide = view_pairs(images, match, block_size=64)
    monkeypatch.setattr(view_search, "TILE_FLOATS", 20 * per_pair)  # 4 x 4 tiles
    narrow = view_pairs(images, match, block_size=64)
    assert all(np.array_equal(w, x) for w, x in zip(wide[:2], narrow[:2]))
    assert np.allclose(wide[2], narrow[2], atol=1e-6)
