"""How the duplicates finding links samples: exact copies by content hash, near-copies by the pixel matcher
(image_similarity.py, small images), the multi-view matcher (views.py, all pairs or the candidates of the
streaming index, duplicate_index.py) and/or the embedding cosine; which of them runs for a given call, and
the thresholds that choose (docs/design.md section 5). `duplicates.Duplicates` groups the links."""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch

from influencegate.findings.code_candidates import available_index
from influencegate.findings.duplicate_index import ViewIndex
from influencegate.findings.image_stats import StatisticsStream
from influencegate.findings.image_similarity import ImageMatch, image_pairs
from influencegate.findings.view_search import view_pairs
from influencegate.findings.views import ViewMatch

#: Largest number of examined samples for which near="auto" uses the image similarity; above it "auto" links by
#: the embedding cosine instead. Both searches are all-pairs, O(M^2), but with very different constants,
#: measured on this project's 2-core CPU, one torch thread, random inputs, M = 1,000-8,000 (image) and
#: 10,000-40,000 (cosine): image_similarity.image_pairs 1.25-1.63 us per M^2 with 16 x 16 thumbnails (every
#: image of side >= 16 px at the default thumb_size) and 0.11-0.25 us per M^2 with 8 x 8 ones (digits);
#: similarity.cosine_pairs (D = 32) 3-4 ns per M^2. At 10,000 images the image search takes ~2-3 min (16 px)
#: or 10-25 s (8 px), less than scoring them with the smallest encoder (SmallCNN, default config: ~30
#: samples/s on this CPU, benchmarks/results/influence_speed_cpu.json, ~5 min); at 100,000 it would take
#: 3.5-4.5 h (16 px) or 20-40 min (8 px), the cosine ~30 s. Raise it on a GPU (device="cuda"), or pass
#: near="image" to force the pixel search.
IMAGE_MAX_SAMPLES = 10_000
#: Largest image side (the shorter of H and W, pixels) for which matcher="auto" compares pixels (ImageMatch,
#: tiles of whole-pixel shifts and crops); above it the multi-view matcher (ViewMatch, views.py). Measured
#: (benchmarks/duplicates_crossover.py; criterion: the worst min(recall, precision) over the shift, crop,
#: JPEG, resize, brightness and border copies): on the tuning photos the views win at 12, 16 and 24 px
#: (0.76 / 0.83 / 0.90 against 0.32 / 0.47 / 0.37), and so on the held-out photos (0.69 / 0.83 / 0.87 against
#: 0.41 / 0.59 / 0.24); on the 8 x 8 digits (held-out table, benchmarks/results/duplicates_natural.json) the
#: tiles win (shift recall 1.00, crop 0.90 against 0.03 and 0.07). 10 lies between the measured 8 and 12.
PIXEL_MAX_SIDE = 10
#: Largest number of examined samples for which search="auto" runs the multi-view matcher on all pairs; above
#: it the streaming candidate index (duplicate_index.ViewIndex) proposes pairs and the same matcher checks only
#: those. On the held-out photos (with the aligned check, benchmarks/results/duplicates_natural.json) the index
#: path has the all-pairs recall and precision at 128-224 px (64 px crops 0.96 against 0.99); at 32 px crop
#: recall 0.89 against 0.94 (its candidates miss some), precision 0.99-1.00 on both; the all-pairs search
#: costs ~4 us per M^2 (2 threads, 32 px colour: 15 s at 2,000 images, 10 min at 12,000).
VIEW_EXACT_MAX_SAMPLES = 2_000
#: Images per streaming batch of the candidate index.
INDEX_BATCH = 1024


def content_hashes(images: torch.Tensor | np.ndarray) -> list[str]:
    """sha256 (hex) of each sample's tensor bytes (float32, C-contiguous): equal only for identical pixels.
    images: M x ... (any array-like, read INDEX_BATCH rows at a time)."""
    hashes: list[str] = []
    for start in range(0, len(images), INDEX_BATCH):
        hashes += block_hashes(images[start:start + INDEX_BATCH])
    return hashes


def block_hashes(block: torch.Tensor | np.ndarray) -> list[str]:
    """content_hashes of one block of B images, in memory (B x ...)."""
    arr = np.ascontiguousarray(block.detach().cpu().numpy() if isinstance(block, torch.Tensor) else block,
                               dtype=np.float32)
    return [hashlib.sha256(arr[i].tobytes()).hexdigest() for i in range(arr.shape[0])]


def exact_pairs(hashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) edges linking each sample to the first sample with the same hash."""
    first: dict[str, int] = {}
    ii, jj = [], []
    for pos, h in enumerate(hashes):
        if h in first:
            ii.append(first[h])
            jj.append(pos)
        else:
            first[h] = pos
    return np.asarray(ii, dtype=np.int64), np.asarray(jj, dtype=np.int64)


def image_paths(images: torch.Tensor | np.ndarray | None, matcher: str, search: str,
                view_exact_max_samples: int) -> tuple[str | None, str | None]:
    """(matcher, search) the image similarity would run for these images: matcher "pixels" or "views"
    (matcher="auto": by the shorter image side against PIXEL_MAX_SIDE), search "exact" (all pairs) or
    "index" (candidates; views only; search="auto": above view_exact_max_samples); (None, None) without
    images."""
    if images is None:
        return None, None
    if matcher == "auto":
        matcher = "pixels" if min(images.shape[-2], images.shape[-1]) <= PIXEL_MAX_SIDE else "views"
    if matcher == "pixels":
        if search == "index":
            raise ValueError(f"duplicates: search='index' runs the multi-view matcher, but images of side "
                             f"<= {PIXEL_MAX_SIDE} px use the pixel matcher; pass matcher='views'")
        return matcher, "exact"
    if search == "auto":
        search = "exact" if len(images) <= view_exact_max_samples else "index"
    return matcher, search


def link_signals(near: str, has_embeddings: bool, has_images: bool, m: int, matcher: str | None,
                 image_max_samples: int) -> tuple[bool, bool]:
    """(link by image similarity, link by embedding cosine) for this call of m samples; ValueError if an
    input is missing. near="auto" links by the embedding cosine instead of the image similarity only when
    the pixel matcher (all pairs, O(M^2)) would examine more than image_max_samples images."""
    if near == "auto":
        too_many = matcher == "pixels" and m > image_max_samples
        if has_images and too_many and not has_embeddings:
            raise ValueError(f"duplicates: near='auto' with {m} images > image_max_samples="
                             f"{image_max_samples} links by the embedding cosine, but no embeddings were "
                             "given; pass embeddings, near='image' (all-pairs pixel search, O(M^2)) or a larger "
                             "image_max_samples")
        use_image = has_images and not too_many
        return use_image, not use_image
    use_image, use_embedding = near in ("image", "both"), near in ("embedding", "both")
    if use_image and not has_images:
        raise ValueError(f"duplicates: near={near!r} needs images (M x C x H x W)")
    if use_embedding and not has_embeddings:
        raise ValueError(f"duplicates: near={near!r} needs embeddings (M x D)")
    return use_image, use_embedding


def stream_index(images: torch.Tensor | np.ndarray, views: ViewMatch,
                 statistics: StatisticsStream | None = None, hashes: list[str] | None = None) -> ViewIndex:
    """The streaming pass over M x C x H x W images (an array-like read INDEX_BATCH images at a time): a
    ViewIndex of them, each batch's image statistics added to `statistics` (when given and still empty, so
    the outliers finding reads them from here instead of reading the pixels again) and each image's content
    hash appended to `hashes` (when given: the exact-duplicate check's, content_hashes)."""
    if statistics is not None and statistics.count:
        statistics = None  # already computed by an earlier pass
    index = ViewIndex(views)
    try:
        for start in range(0, len(images), INDEX_BATCH):
            batch = images[start:start + INDEX_BATCH]
            index.add(batch)
            if statistics is not None:
                statistics.add(batch)
            if hashes is not None:
                hashes += block_hashes(batch)
    except BaseException:
        index.close()
        raise
    return index


def image_links(images: torch.Tensor | np.ndarray, matcher: str, search: str, image: ImageMatch, views: ViewMatch,
                block_size: int, device: str, statistics: StatisticsStream | None = None,
                hashes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int]:
    """(i, j, s, the absolute threshold of s, candidate pairs checked: 0 for an all-pairs search) of the pairs
    the pixel matcher (`image`) or the multi-view matcher (`views`, all pairs or the index) links; images
    M x C x H x W, block_size rows per similarity block, on `device`. statistics, hashes: filled by the index
    path's streaming pass (stream_index); the all-pairs paths leave them as they are."""
    if matcher == "pixels":
        i, j, s = image_pairs(images, image, block_size, device)
        return i, j, s, image.threshold, 0
    if search == "exact":
        i, j, s = view_pairs(images, views, block_size, device)
        return i, j, s, views.threshold, 0
    index = stream_index(images, views, statistics, hashes)
    try:
        i, j, s, checked = index.pairs(index=available_index())
    finally:
        index.close()
    return i, j, s, views.threshold, checked
