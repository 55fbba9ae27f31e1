"""Group evidence: systematic caption errors come in groups (issue 16, "What it must show" item 3).

A systematic error (half of the 3s captioned "eight") is learned by the trained model, so the pair's own
cosine looks fine, and under heads fitted on the clean reference only each such pair is about as unusual as
a hard clean pair (those heads name the right digit for ~80% of images). But the wrong pairs share one image
kind and one caption kind, and their evidence agrees. Under one reference-only head (the one
``influencegate.ecif.evidence`` fits on one half of the reference), for the audited pairs and the reference
pairs of the other half:

1. profiles (no labels): the image's profile is its softmax over the head's own reference captions
   (distinct), the caption's profile its softmax over the head's own reference images; a pair's signature is
   both square-rooted and concatenated, so that the dot product of two signatures is the mean of the two
   Bhattacharyya coefficients (1 = the same image kind and the same caption kind).
2. class-conditional residual: the pair's caption loss minus the mean caption loss of the
   ``caption_neighbours`` other-half reference pairs (out of sample, never the pair itself) whose caption
   profile is closest: how much worse than clean pairs with that kind of caption.
3. group mean: the mean residual of the round(group_share x N) audited pairs with the closest signatures
   (never the pair itself); a reference pair takes its group among the audited pairs in the same way. A
   share, not a count: systematic errors are a share of the pairs, so their groups grow with N.

Under a clean audited set an audited pair and a reference pair are exchangeable for this statistic, so the
conformal test against the reference (``influencegate.ecif.combined``) keeps its level. GROUP_SHARE and
CAPTION_NEIGHBOURS were chosen on development seed 100 (benchmarks/ecif_detection.py --phase dev, N = 1,200).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

#: Share of the N audited pairs per group (at least 1, at most N - 1): 80 of the 1,200 dev pairs, chosen on
#: development seed 100 among 20, 40, 80 and 160 of 1,200.
GROUP_SHARE = 80 / 1200
#: Reference pairs that set a caption kind's baseline loss; chosen on development seed 100 among 5, 10, 20.
CAPTION_NEIGHBOURS = 20


@dataclass(frozen=True)
class GroupSettings:
    """group_share: share of the audited pairs averaged per group; caption_neighbours: reference pairs per
    caption baseline; chunk: rows per block of the nearest-neighbour search (memory chunk x N x 8 bytes)."""

    group_share: float = GROUP_SHARE
    caption_neighbours: int = CAPTION_NEIGHBOURS
    chunk: int = 2048


def signatures(image_emb: torch.Tensor, text_emb: torch.Tensor, own_image_emb: torch.Tensor,
               own_text_emb: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(signatures (R, C + K), caption profiles (R, K)), both square-rooted probabilities.

    image_emb, text_emb: R x d embeddings of the scored pairs under one head; own_image_emb, own_text_emb:
    K x d of the reference pairs that head was fitted on (their distinct captions, C <= K, form the image
    profile's support); tau: the model's temperature."""
    image_profile = torch.softmax(image_emb @ torch.unique(own_text_emb, dim=0).T / tau, dim=1).sqrt()
    caption_profile = torch.softmax(text_emb @ own_image_emb.T / tau, dim=1).sqrt()
    return torch.cat([image_profile, caption_profile], dim=1) / 2 ** 0.5, caption_profile


def neighbour_mean(values: torch.Tensor, keys: torch.Tensor, queries: torch.Tensor, k: int, exclude: int,
                   chunk: int) -> torch.Tensor:
    """For each query row q (Q,), the mean of values (K,) over the k keys (K x D) with the largest dot
    product with q; query i < exclude is key i and is never its own neighbour. ValueError when k < 1."""
    if k < 1:
        raise ValueError(f"neighbour mean needs k >= 1, got {k}")
    out = torch.empty(len(queries), dtype=values.dtype)
    for start in range(0, len(queries), chunk):
        sim = queries[start:start + chunk] @ keys.T
        rows = torch.arange(start, max(start, min(start + chunk, exclude)))
        sim[rows - start, rows] = -torch.inf
        out[start:start + chunk] = values[sim.topk(k, dim=1).indices].mean(1)
    return out


def group_evidence(image_emb: torch.Tensor, text_emb: torch.Tensor, loss: torch.Tensor, n: int,
                   own_image_emb: torch.Tensor, own_text_emb: torch.Tensor, tau: float,
                   settings: GroupSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """(group evidence of the n audited pairs (n,), of the other-half reference pairs (R - n,)), nats.

    image_emb, text_emb, loss: R x d, R x d, (R,) for the audited pairs (first n rows) then the reference
    pairs of the other half, under the head fitted on own_image_emb, own_text_emb (its reference half)."""
    m = len(loss) - n
    if n < 2 or m < 2:
        raise ValueError(f"group evidence needs at least 2 audited and 2 reference pairs, got {n} and {m}")
    signature, caption = signatures(image_emb, text_emb, own_image_emb, own_text_emb, tau)
    # reference row j (after n) is key j among the reference rows: shift so that it skips itself
    baseline = torch.cat([
        neighbour_mean(loss[n:], caption[n:], caption[:n], min(settings.caption_neighbours, m), 0, settings.chunk),
        neighbour_mean(loss[n:], caption[n:], caption[n:], min(settings.caption_neighbours, m - 1), m, settings.chunk)])
    residual = loss - baseline
    size = min(max(1, round(settings.group_share * n)), n - 1)
    grouped = neighbour_mean(residual[:n], signature[:n], signature, size, n, settings.chunk)
    return grouped[:n], grouped[n:]
