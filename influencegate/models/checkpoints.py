"""Saving and loading encoders; every torch file is read with ``torch.load(weights_only=True)``.

Specs understood by ``load_encoder`` (locations: a local path or an fsspec URL such as ``s3://...``):
- our own checkpoints: ``{"arch", "arch_kwargs", "state_dict", "meta"}`` written by ``save_encoder``;
- solo-learn checkpoints: a dict whose ``state_dict`` keys carry a ``backbone.`` prefix (other keys such as
  ``projector.`` or ``classifier.`` are ignored), loaded into ``cifar_resnet18()``;
- a TorchScript file given as a plain location is refused (it is a program): name it ``torchscript:<location>``;
- ``<prefix>...`` specs of ``external.FAMILIES``: ``torchvision:<name>`` (random weights),
  ``timm:<name>@<checkpoint>``, ``open_clip:<model>@<checkpoint>``, ``torchscript:<location>``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from influencegate.data import storage
from influencegate.models.backbones import cifar_resnet18
from influencegate.models.external import TextEncoder, split_spec
from influencegate.models.registry import build_encoder
from influencegate.models.weights import is_torchscript, load_state_strict, read_checkpoint, require_file

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


def load_encoder(spec: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """An encoder in eval mode from a spec (see the module docs): a ``<prefix>...`` spec of
    ``external.FAMILIES`` (``torchscript:`` among them), else a checkpoint location (local path or fsspec URL):
    one of our checkpoints or a solo-learn checkpoint, read with weights_only=True. A TorchScript file given as
    a plain location is refused: it is a program, loaded only when named ``torchscript:``.

    Raises ValueError for a missing or unreadable file, an unknown checkpoint layout, or keys/shapes that do
    not match the architecture.
    """
    family, location = split_spec(spec)
    if family is not None:
        return family.load(location, map_location).eval()
    require_file(location, "encoder checkpoint")
    if is_torchscript(location):  # code, not weights: run only when asked for by name
        raise ValueError(f"{storage.redact(location)!r} is a TorchScript program (it runs code when loaded); pass "
                         f"torchscript:{storage.redact(location)} to load it on purpose")
    checkpoint = read_checkpoint(location, map_location)
    shown = storage.redact(location)
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise ValueError(f"checkpoint {shown!r} is not a dict with a 'state_dict' entry")
    state = checkpoint["state_dict"]
    if "arch" in checkpoint:
        model = build_encoder(checkpoint["arch"], **checkpoint.get("arch_kwargs", {}))
        return load_state_strict(model, state, f"checkpoint {shown!r} (arch {checkpoint['arch']!r})").eval()
    backbone = {k[len(SOLO_PREFIX):]: v for k, v in state.items() if k.startswith(SOLO_PREFIX)}
    if not backbone:
        raise ValueError(f"checkpoint {shown!r} has neither an 'arch' entry (influencegate) nor 'backbone.' keys (solo-learn)")
    return load_state_strict(cifar_resnet18(), backbone, f"solo-learn checkpoint {shown!r} (cifar_resnet18)").eval()


def load_image_text_encoders(spec: str | os.PathLike, map_location: str | torch.device = "cpu",
                             device: str | torch.device = "cpu") -> tuple[nn.Module, TextEncoder | None]:
    """(image encoder, text encoder or None) for image-text pairs (ECIF): both towers of a family that has
    them (``open_clip:``; the text encoder maps captions to N x D on ``device``), else ``load_encoder(spec)``
    and None (ECIF's default text encoder)."""
    family, rest = split_spec(spec)
    if family is not None and family.load_pair is not None:
        return family.load_pair(rest, map_location, device)
    return load_encoder(spec, map_location), None
