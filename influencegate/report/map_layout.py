"""Where each sample sits on the embedding map: a t-SNE layout of a (sampled) version, and, for an appended
version, the previous version's layout reused with the new samples placed beside their nearest mapped
neighbours (no new t-SNE: its cost stays that of a k-NN of the new samples against the mapped ones).

A layout is (positions of the mapped rows among the M embeddings, xy M' x 2 float). Pure core (numpy,
scikit-learn, torch)."""
from __future__ import annotations

import numpy as np

#: Mapped neighbours whose mean position places a new sample.
PLACE_K = 5


def tsne_layout(emb: np.ndarray, flagged: np.ndarray, seed: int = 0, max_points: int = 5000,
                perplexity: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """(positions, xy): scikit-learn t-SNE (PCA initialisation, random_state=seed) of the M x D embeddings;
    above max_points a seeded random subset, the `flagged` rows (bool M) first. perplexity is capped at
    (n - 1) / 3."""
    n = len(emb)
    pick = np.arange(n)
    if n > max_points:
        rng = np.random.default_rng(seed)
        first, plain = np.flatnonzero(flagged), np.flatnonzero(~flagged)
        first = rng.permutation(first)[:max_points]
        pick = np.sort(np.concatenate([first, rng.choice(plain, max_points - len(first), replace=False)]))
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = emb[pick].astype(np.float64)
    if x.shape[1] > 50:
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    xy = TSNE(n_components=2, perplexity=min(perplexity, (len(pick) - 1) / 3.0), init="pca", random_state=seed
              ).fit_transform(x)
    return pick, xy


def placed_layout(emb: np.ndarray, mapped: np.ndarray, mapped_xy: np.ndarray, new: np.ndarray, seed: int = 0,
                  k: int = PLACE_K) -> tuple[np.ndarray, np.ndarray]:
    """(positions, xy): the previous layout (rows `mapped` of the M x D embeddings at `mapped_xy`) plus new
    rows (bool M `new`), as many as keep their share of the version (seeded sample), each at the mean position
    of its k most cosine-similar mapped rows."""
    import torch

    fresh = np.flatnonzero(new)
    share = len(fresh) / max(int((~new).sum()), 1)
    count = min(len(fresh), max(1, int(round(len(mapped) * share))))
    fresh = np.sort(np.random.default_rng(seed).choice(fresh, count, replace=False)) if len(fresh) else fresh
    if len(fresh) == 0 or len(mapped) == 0:
        return mapped, mapped_xy
    unit = torch.nn.functional.normalize(torch.as_tensor(emb, dtype=torch.float32), dim=1)
    near = torch.topk(unit[fresh] @ unit[mapped].T, min(k, len(mapped)), dim=1).indices.numpy()
    xy = np.asarray(mapped_xy, dtype=np.float64)[near].mean(axis=1)
    order = np.argsort(np.concatenate([mapped, fresh]), kind="stable")
    return np.concatenate([mapped, fresh])[order], np.concatenate([mapped_xy, xy])[order]
