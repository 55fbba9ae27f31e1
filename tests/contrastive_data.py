"""Shared pieces of the contrastive (ECIF) tests: tiny clustered image-text features and one torch thread."""
from __future__ import annotations

import pytest
import torch

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
