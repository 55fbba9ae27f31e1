"""Saving and loading encoders; every load uses ``torch.load(weights_only=True)``.

Three kinds of spec are understood by ``load_encoder``:
- our own checkpoints: ``{"arch", "arch_kwargs", "state_dict", "meta"}`` written by ``save_encoder``;
- solo-learn checkpoints: a dict whose ``state_dict`` keys carry a ``backbone.`` prefix (other keys such as
  ``projector.`` or ``classifier.`` are ignored), loaded into ``cifar_resnet18()``;
- ``"torchvision:<name>"``: a torchvision classification model with random weights, as a feature extractor.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from influencegate.models.backbones import cifar_resnet18
from influencegate.models.registry import TORCHVISION_PREFIX, build_encoder

SOLO_PREFIX = "backbone."
_PRIMITIVES = (str, int, float, bool, type(None))


def _check_primitive(value: Any, where: str) -> None:
    """Raise ValueError unless ``value`` is built from str/int/float/bool/None, lists, tuples and str-keyed dicts."""
    if isinstance(value, _PRIMITIVES):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_primitive(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} has a non-string key {key!r}")
            _check_primitive(item, f"{where}[{key!r}]")
        return
    raise ValueError(f"{where} holds a {type(value).__name__}; checkpoints store only primitive types")


def save_encoder(encoder: nn.Module, path: str | Path, arch: str, arch_kwargs: Mapping[str, Any], meta: Mapping[str, Any]) -> Path:
    """Write ``encoder`` so that ``load_encoder(path)`` rebuilds it with ``build_encoder(arch, **arch_kwargs)``.

    arch_kwargs, meta: primitive values only (str, numbers, bool, None, lists/tuples, dicts), so the file
        loads with ``weights_only=True``; meta is free-form (training method, dataset version, losses...).
    Returns the path written (parent folders are created).
    """
    _check_primitive(dict(arch_kwargs), "arch_kwargs")
    _check_primitive(dict(meta), "meta")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    torch.save({"arch": arch, "arch_kwargs": dict(arch_kwargs), "state_dict": state, "meta": dict(meta)}, path)
    return path


def _load_state(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> nn.Module:
    """Load ``state`` strictly; missing/unexpected keys or shape mismatches become one clear ValueError."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong_shape:
        details = [
            f"{label} ({len(keys)}): {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
            for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong_shape))
            if keys
        ]
        raise ValueError(f"{what} does not match the architecture: " + "; ".join(details))
    model.load_state_dict(state)
    return model


def _read(path: Path, map_location: str | torch.device) -> Any:
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {str(path)!r}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors, truncated files, non-torch files
        raise ValueError(
            f"cannot load checkpoint {str(path)!r} with weights_only=True: {exc}. If it pickles Python objects "
            "(e.g. a training config), re-save it as {'state_dict': model.state_dict()}."
        ) from exc


def load_encoder(spec: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """An encoder in eval mode from a checkpoint path or a ``"torchvision:<name>"`` spec (see module docs).

    Raises ValueError for a missing or unreadable file, an unknown checkpoint layout, or keys/shapes that do
    not match the architecture.
    """
    if isinstance(spec, str) and spec.startswith(TORCHVISION_PREFIX):
        return build_encoder(spec).eval()
    path = Path(spec)
    checkpoint = _read(path, map_location)
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise ValueError(f"checkpoint {str(path)!r} is not a dict with a 'state_dict' entry")
    state = checkpoint["state_dict"]
    if "arch" in checkpoint:
        model = build_encoder(checkpoint["arch"], **checkpoint.get("arch_kwargs", {}))
        return _load_state(model, state, f"checkpoint {str(path)!r} (arch {checkpoint['arch']!r})").eval()
    backbone = {k[len(SOLO_PREFIX):]: v for k, v in state.items() if k.startswith(SOLO_PREFIX)}
    if not backbone:
        raise ValueError(
            f"checkpoint {str(path)!r} has neither an 'arch' entry (influencegate) nor 'backbone.' keys (solo-learn)"
        )
    return _load_state(cifar_resnet18(), backbone, f"solo-learn checkpoint {str(path)!r} (cifar_resnet18)").eval()
