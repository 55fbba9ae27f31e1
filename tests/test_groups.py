"""Group evidence for systematic caption errors (issue 16, "What it must show" item 3): the neighbour means by
hand, a planted class-consistent group found where each pair alone is weak evidence, and the scorer's flag
(the union of the combined and the group tests) on a toy systematic error and on clean pairs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from contrastive_data import SMALL, WORDS, one_thread, toy_pairs, word_encoder  # noqa: F401 (one_thread: autouse fixture)
from influencegate.ecif import EcifConfig, EcifScorer, PairSet
from influencegate.ecif.groups import GroupSettings, group_evidence, neighbour_mean


def test_neighbour_mean_by_hand_never_counts_a_pair_as_its_own_neighbour():
    # unit keys; dot products: a.b = 0.8, a.c = 0, a.d = -0.6, b.c = 0.6, b.d = 0, c.d = 0.8
    keys = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]], dtype=torch.float64)
    values = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    assert neighbour_mean(values, keys, keys, 1, 4, chunk=3).tolist() == [2.0, 1.0, 4.0, 3.0]
    assert neighbour_mean(values, keys, keys, 1, 0, chunk=3).tolist() == [1.0, 2.0, 3.0, 4.0]  # no exclusion
    assert neighbour_mean(values, keys, keys, 2, 4, chunk=2).tolist() == [2.5, 2.0, 3.0, 2.5]
    assert neighbour_mean(values, keys, keys[2:], 1, 0, chunk=1).tolist() == [3.0, 4.0]  # queries that are no keys
    with pytest.raises(ValueError, match="k >= 1"):
        neighbour_mean(values, keys, keys, 0, 4, chunk=2)


def _embeddings(classes: np.ndarray, rng: np.random.Generator, noise: float) -> torch.Tensor:
    """One-hot class directions (4 classes) plus Gaussian noise: len(classes) x 4, float64."""
    return torch.as_tensor(np.eye(4)[classes] + noise * rng.normal(size=(len(classes), 4)))


def test_a_planted_class_consistent_group_stands_out_where_each_pair_is_weak_evidence():
    rng = np.random.default_rng(0)
    n, planted = 240, np.arange(24)  # 10% of the audited pairs: images of class 0 captioned as class 1
    image_cls, text_cls = rng.integers(0, 4, n), None
    image_cls[planted] = 0
    text_cls = image_cls.copy()
    text_cls[planted] = 1
    ref_cls = np.repeat(np.arange(4), 10)  # the other reference half, clean
    own_cls = np.repeat(np.arange(4), 10)  # the half the head was fitted on
    images = torch.cat([_embeddings(image_cls, rng, 0.3), _embeddings(ref_cls, rng, 0.3)])
    texts = torch.cat([_embeddings(text_cls, rng, 0.1), _embeddings(ref_cls, rng, 0.1)])
    loss = rng.normal(2.0, 0.5, n + len(ref_cls))
    loss[planted] += 0.6  # each wrong pair alone: AUROC ~0.8
    pairs, reference = group_evidence(images, texts, torch.as_tensor(loss), n, _embeddings(own_cls, rng, 0.3),
                                      _embeddings(own_cls, rng, 0.1), 0.2, GroupSettings(16 / 240, 5, chunk=64))
    bad = np.isin(np.arange(n), planted)
    assert roc_auc_score(bad, loss[:n]) < 0.9
    assert roc_auc_score(bad, pairs.numpy()) > 0.95
    # clean audited pairs look like the clean reference pairs, the planted group lies beyond both
    threshold = np.quantile(reference.numpy(), 0.95)
    assert (pairs.numpy()[bad] > threshold).mean() > 0.9 and (pairs.numpy()[~bad] > threshold).mean() < 0.15


def _systematic(pairs: PairSet, source: int, target: int, share: float, seed: int) -> tuple[PairSet, np.ndarray]:
    """A share of the pairs captioned WORDS[source] re-captioned WORDS[target]: (pairs, is_misaligned)."""
    members = np.flatnonzero([WORDS[source] in c for c in pairs.captions])
    chosen = np.random.default_rng(seed).choice(members, size=int(round(share * len(members))), replace=False)
    captions = [c.replace(WORDS[source], WORDS[target]) if i in chosen else c for i, c in enumerate(pairs.captions)]
    return PairSet(pairs.sample_ids, captions, pairs.images), np.isin(np.arange(len(captions)), chosen)


def test_scorer_flags_a_systematic_error_and_few_clean_pairs():
    clean, _ = toy_pairs(160, seed=3, wrong=0.0)
    pairs, bad = _systematic(clean, 0, 1, 0.6, seed=3)
    reference, _ = toy_pairs(120, seed=4, wrong=0.0)
    config = EcifConfig(**SMALL, flag_share=0.05)
    scorer = EcifScorer(config, text_encoder=word_encoder).fit(pairs)
    table = scorer.score(reference).iloc[: len(pairs)]
    assert roc_auc_score(bad, table["group_score"]) > 0.95
    flagged = table["is_misaligned"].to_numpy()
    assert flagged[bad].mean() > 0.5 and flagged[~bad].mean() <= 0.1
    assert set(scorer.flag_rule) >= {"flag_threshold", "group_threshold"}
    clean_table = EcifScorer(config, text_encoder=word_encoder).fit(clean).score(reference)
    assert clean_table["is_misaligned"].mean() <= 0.1  # the level is 5%: clean pairs are rarely flagged
