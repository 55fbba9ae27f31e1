"""Shared pieces of the contrastive (ECIF) tests: tiny clustered image-text features, toy captioned pairs with
their word encoder, small scorer settings, and one torch thread."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from influencegate.data.captions import shuffle_captions
from influencegate.ecif import PairSet

CLASSES = 4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny float64 ops run fastest on one thread (and the test machine is shared). Autouse in every test
    module that imports it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def clustered(n: int, seed: int, wrong: float = 0.0, image_dim: int = 6, text_dim: int = 5):
    """n pairs: image features around one of CLASSES centres, text features around the centre of the same
    class, except the first round(wrong x n) whose text names the next class. float64 (n x image_dim, n x text_dim)."""
    g = torch.Generator().manual_seed(seed)
    centres_i = torch.randn(CLASSES, image_dim, generator=g, dtype=torch.float64)
    centres_t = torch.randn(CLASSES, text_dim, generator=g, dtype=torch.float64)
    cls = torch.randint(0, CLASSES, (n,), generator=g)
    text_cls = cls.clone()
    k = int(round(wrong * n))
    text_cls[:k] = (text_cls[:k] + 1) % CLASSES
    images = centres_i[cls] + 0.5 * torch.randn(n, image_dim, generator=g, dtype=torch.float64)
    texts = centres_t[text_cls] + 0.3 * torch.randn(n, text_dim, generator=g, dtype=torch.float64)
    return images, texts


WORDS = ("circle", "square", "triangle", "star")


def word_encoder(captions):
    """A deterministic toy text encoder: the class word's centre (as in `clustered`) plus a template offset."""
    centres = torch.randn(CLASSES, 5, generator=torch.Generator().manual_seed(7))
    return torch.stack([centres[next(i for i, w in enumerate(WORDS) if w in c)] + 0.1 * len(c) / 40 for c in captions])


def toy_pairs(n: int, seed: int, wrong: float) -> tuple[PairSet, np.ndarray]:
    """n pairs of 6-dim image features around CLASSES centres captioned with their class word (WORDS), a
    share `wrong` of the captions shuffled; returns (pairs, is_misaligned (n,) bool)."""
    g = torch.Generator().manual_seed(seed)
    cls = torch.randint(0, CLASSES, (n,), generator=g)
    centres = torch.randn(CLASSES, 6, generator=torch.Generator().manual_seed(8))
    images = centres[cls] + 0.4 * torch.randn(n, 6, generator=g)
    captions = [f"a {'big ' if i % 2 else ''}{WORDS[c]}" for i, c in enumerate(cls.tolist())]
    captions, _, bad = shuffle_captions(captions, cls.tolist(), wrong, seed)
    return PairSet([f"p{i:03d}" for i in range(n)], captions, images), bad


#: EcifScorer settings of the toy pairs: convex image head, exact solves (P = 35), a tight optimum.
SMALL = dict(tau=0.5, text_head=False, normalize=False, batch_size=10, delta=1.0, tol=1e-9, progress=False)
