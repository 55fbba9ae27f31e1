"""Every link of the duplicates finding among the M examined samples, for a whole version or for an appended
one (findings.appended: only the pairs with a new member, the previous links among old samples carried over);
`duplicates.Duplicates.find` groups them."""
from __future__ import annotations

from typing import Any

import numpy as np

from influencegate.findings.appended import Previous, all_hashes, embedding_links, near_links
from influencegate.findings.code_candidates import unique_keys
from influencegate.findings.duplicate_links import content_hashes, exact_pairs, image_links
from influencegate.findings.image_stats import StatisticsStream
from influencegate.findings.similarity import cosine_pairs


def duplicate_edges(dups: Any, emb: np.ndarray, images: Any, use_image: bool, use_embedding: bool,
                    matcher: str | None, search: str | None, previous: Previous | None = None,
                    statistics: StatisticsStream | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, int], np.ndarray, dict[str, Any]]:
    """(i, j, link counts, bool M exact_members, state) of the links among the M rows of `emb` (M x D) and
    `images` (M x C x H x W), by the signals chosen (duplicate_links.link_signals / image_paths) with the
    settings of `dups` (a Duplicates). previous: None searches all pairs and returns state {}; a Previous
    (findings.appended) searches the pairs with a new member, carries its old links over, and returns this
    version's state: links (i, j), near_top (M x k, where the image matcher ran), index_order (where the
    streaming index ran: appended.near_links) and hashes (where exact ran).
    statistics: filled with the images' statistics where the index's streaming pass reads them (image_links),
    which then gives the content hashes too (the pixels read once)."""
    m = len(emb)
    edges_i, edges_j = [], []
    counts = {"embedding_pairs": 0, "image_pairs": 0, "image_pairs_relative": 0, "exact_pairs": 0,
              "candidates": 0}
    state: dict[str, Any] = {}
    streamed: list[str] = []  # content hashes, where the index's streaming pass computes them
    if previous is not None:
        previous.check(m, "duplicates")
        edges_i.append(previous.links[0])
        edges_j.append(previous.links[1])
        counts.update(new_samples=int(previous.new.sum()), carried_links=len(previous.links[0]))
    if use_embedding and m > 1:
        if dups.center:
            emb = emb - emb.mean(axis=0, keepdims=True)
        i, j, _ = (cosine_pairs(emb, dups.threshold, dups.block_size, dups.device, dups.index) if previous is None
                   else embedding_links(emb, dups.threshold, previous, dups.block_size, dups.device))
        edges_i.append(i)
        edges_j.append(j)
        counts["embedding_pairs"] = len(i)
    if use_image and m > 1:
        if previous is None:
            i, j, s, threshold, counts["candidates"] = image_links(images, matcher, search, dups.image, dups.views,
                                                                   dups.block_size, dups.device, statistics,
                                                                   streamed if dups.exact else None)
        else:
            i, j, s, counts["candidates"], near_state = near_links(images, matcher, search, dups.image, dups.views,
                                                                   previous, dups.block_size, dups.device)
            state.update(near_state)
            threshold = (dups.image if matcher == "pixels" else dups.views).threshold
        edges_i.append(i)
        edges_j.append(j)
        counts["image_pairs"], counts["image_pairs_relative"] = len(i), int((s < threshold).sum())
    exact_members = np.zeros(m, dtype=bool)
    if dups.exact and images is not None:
        if previous is not None:
            hashes = all_hashes(images, previous)
        else:
            hashes = streamed if len(streamed) == m else content_hashes(images)
        i, j = exact_pairs(hashes)
        edges_i.append(i)
        edges_j.append(j)
        counts["exact_pairs"] = len(i)
        exact_members[i] = exact_members[j] = True
        if previous is not None:
            state["hashes"] = hashes
    ii = np.concatenate(edges_i) if edges_i else np.zeros(0, np.int64)
    jj = np.concatenate(edges_j) if edges_j else np.zeros(0, np.int64)
    if previous is not None:  # each undirected link once, as the next version's carried links
        keys = unique_keys(np.minimum(ii, jj).astype(np.int64) * max(m, 1) + np.maximum(ii, jj))
        ii, jj = keys // max(m, 1), keys % max(m, 1)
        state["links"] = (ii, jj)
    return ii, jj, counts, exact_members, state
