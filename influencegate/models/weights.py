"""Reading weights from any location (a local path or an fsspec URL, see ``influencegate.data.storage``) and
loading them strictly into a model. Every torch file is read with ``weights_only=True``: a file that pickles
code is refused, never run; ``.safetensors`` files hold tensors only.
"""
from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from influencegate.data import storage

#: Keys under which training scripts wrap a model's state dict (timm/open_clip/Lightning: "state_dict",
#: DeiT/MAE/DINO-style: "model").
STATE_DICT_KEYS = ("state_dict", "model")
#: The prefix DistributedDataParallel puts before every key.
DDP_PREFIX = "module."


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (unpickling errors span many), or its type name when empty."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def require_file(location: str, what: str = "checkpoint") -> None:
    """Raise ValueError ``"<what> not found: '<location>'"`` unless a file is at ``location``."""
    if not storage.is_file(location):
        raise ValueError(f"{what} not found: {storage.redact(location)!r}")


def read_checkpoint(location: str, map_location: str | torch.device = "cpu") -> Any:
    """The object in the torch file at ``location``, loaded with ``weights_only=True`` (tensors and primitive
    containers). ValueError for a missing file or one that cannot be loaded that way (pickled code, a file that
    is not a torch file)."""
    require_file(location)
    try:
        return storage.load_torch(location, map_location=map_location)
    except Exception as exc:  # unpickling errors, truncated files, non-torch files
        raise ValueError(
            f"cannot load checkpoint {storage.redact(location)!r} with weights_only=True: {first_line(exc)}. "
            "If it pickles Python objects (e.g. a training config), re-save it as {'state_dict': model.state_dict()}."
        ) from exc


def read_state_dict(location: str, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The state dict at ``location``: a ``.safetensors`` file, or a torch file holding a plain state dict or
    one wrapped as ``{"state_dict": ...}`` / ``{"model": ...}``; a ``module.`` prefix on every key (DDP) is
    removed. ValueError for a missing or unreadable file, or a torch file holding something else."""
    if storage.suffix(location) == ".safetensors":
        require_file(location)
        from safetensors.torch import load as load_safetensors

        try:
            state = load_safetensors(storage.read_bytes(location))
        except Exception as exc:  # a truncated file, a header that is not safetensors
            raise ValueError(f"cannot read safetensors file {storage.redact(location)!r}: {first_line(exc)}") from exc
        return {k: v.to(map_location) for k, v in state.items()}
    checkpoint = read_checkpoint(location, map_location)
    for key in STATE_DICT_KEYS:
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"checkpoint {storage.redact(location)!r} is neither a state dict (names -> tensors) nor one "
                         f"wrapped under {' or '.join(repr(k) for k in STATE_DICT_KEYS)}")
    if checkpoint and all(k.startswith(DDP_PREFIX) for k in checkpoint):
        return {k[len(DDP_PREFIX):]: v for k, v in checkpoint.items()}
    return dict(checkpoint)


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> nn.Module:
    """Load ``state`` into ``model`` strictly and return ``model``; missing/unexpected keys or shape mismatches
    become one ValueError that starts with ``what`` and lists up to five keys of each kind."""
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


def read_torchscript(location: str, map_location: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """The TorchScript module saved at ``location`` (``torch.jit.save``), in eval mode. ValueError for a missing
    file or one that ``torch.jit.load`` cannot open."""
    require_file(location, "TorchScript file")
    try:
        return torch.jit.load(io.BytesIO(storage.read_bytes(location)), map_location=map_location).eval()
    except Exception as exc:  # not a TorchScript archive, a truncated file
        raise ValueError(f"cannot load TorchScript file {storage.redact(location)!r}: {first_line(exc)}") from exc


def is_torchscript(location: str) -> bool:
    """True when the file at ``location`` is a TorchScript archive: a zip whose ``<root>/code/`` holds the
    compiled code (``torch.save`` zips have ``data.pkl`` and ``data/`` only). Reads the zip directory only."""
    import zipfile

    with storage.open_binary(location) as file:
        if not zipfile.is_zipfile(file):
            return False
        names = zipfile.ZipFile(file).namelist()
    return any(name.split("/")[1:2] == ["code"] for name in names)
