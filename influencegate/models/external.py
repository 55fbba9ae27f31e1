"""Encoders users already have, and the registry of ``--encoder`` spec prefixes.

A spec is a checkpoint location (ours or solo-learn: see ``checkpoints.load_encoder``)
or ``<prefix><rest>`` with a prefix of ``FAMILIES``:

- ``torchvision:<name>``: a torchvision classification model with random weights, as a feature extractor;
- ``timm:<name>@<checkpoint>``: ``timm.create_model(name, pretrained=False, num_classes=0)`` (images
  B x 3 x H x W -> B x num_features) with the checkpoint's weights, the classifier's keys dropped;
- ``open_clip:<model>@<checkpoint>``: ``open_clip.create_model(model, pretrained=None)`` with the checkpoint's
  weights; ``<model>`` is a built-in config name (``open_clip.list_models()``) or the location of a model
  config JSON (open_clip's format: embed_dim, vision_cfg, text_cfg; or ``{"model_cfg": ...}`` as in an
  ``open_clip_config.json``). As an image encoder: the image tower (B x 3 x H x W -> B x embed_dim); for
  image-text pairs (``load_image_text_encoders``) also the text tower with the model's tokenizer;
- ``torchscript:<location>``: a ``torch.jit.save`` file, for frozen uses only (ECIF's image features,
  embeddings for the findings): Influence-SSL cannot hook its layers.

Every location is a local path or an fsspec URL (``s3://``, ``gs://``, ``memory://``, ``file://``). Weights
are never downloaded: a timm or open_clip spec without ``@<checkpoint>`` is refused, and so are open_clip
models whose text tower or tokenizer would come from the Hugging Face Hub. timm and open_clip are optional
(extras ``[timm]`` and ``[clip]``) and imported only when a spec needs them.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from influencegate.data import storage
from influencegate.models.registry import TORCHVISION_PREFIX, build_encoder
from influencegate.models.weights import load_state_strict, read_state_dict, read_torchscript, require_file

#: captions -> N x D float tensor on the CPU.
TextEncoder = Callable[[Sequence[str]], torch.Tensor]
MapLocation = str | torch.device


@dataclass(frozen=True)
class EncoderFamily:
    """One ``<prefix><rest>`` form of an encoder spec.

    syntax: how to write it (for messages). load: (rest, map_location) -> encoder nn.Module.
    files: rest -> [(location, what it is)] that must exist; ValueError (one line) for a malformed rest.
    package, extra: the optional package ``load`` imports and the influencegate extra that installs it.
    load_pair: (rest, map_location, device) -> (image encoder, text encoder) for families with both towers.
    """

    prefix: str
    syntax: str
    load: Callable[[str, MapLocation], nn.Module]
    files: Callable[[str], list[tuple[str, str]]]
    package: str | None = None
    extra: str | None = None
    load_pair: Callable[[str, MapLocation, MapLocation], tuple[nn.Module, TextEncoder]] | None = None

    def require_package(self) -> ModuleType | None:
        """The family's optional package, imported; ValueError naming the extra to install when it is missing."""
        if self.package is None:
            return None
        try:
            return importlib.import_module(self.package)
        except ImportError:
            raise ValueError(self.missing_package()) from None

    def missing_package(self) -> str:
        """The one-line message for a missing optional package."""
        return (f"--encoder {self.syntax} needs the {self.package} package, which is not installed: "
                f"pip install 'influencegate[{self.extra}]'")


def _model_and_checkpoint(prefix: str, rest: str, example: str) -> tuple[str, str]:
    """(model, checkpoint) of ``<model>@<checkpoint>``; a one-line ValueError when either is missing."""
    model, _, checkpoint = rest.partition("@")
    if not model:
        raise ValueError(f"encoder spec {prefix}{rest!r} names no model: write it as {example}")
    if not checkpoint:
        raise ValueError(f"encoder spec {prefix}{model} has no checkpoint, and influencegate never downloads weights: "
                         f"pass a local file or URL after '@', e.g. {example}")
    return model, checkpoint


# -- timm ------------------------------------------------------------------------------------------------------
TIMM_PREFIX = "timm:"
TIMM_EXAMPLE = "timm:resnet18@/path/weights.safetensors"


def _timm_files(rest: str) -> list[tuple[str, str]]:
    return [(_model_and_checkpoint(TIMM_PREFIX, rest, TIMM_EXAMPLE)[1], "timm checkpoint")]


def load_timm(rest: str, map_location: MapLocation = "cpu") -> nn.Module:
    """``timm:<name>@<checkpoint>`` (``rest`` without the prefix): a timm feature extractor in eval mode,
    images B x 3 x H x W -> B x num_features (the pooled features that fed the classifier).

    The checkpoint (``.safetensors``, or a torch file with a plain or wrapped state dict) must hold every
    weight of the model except its classifier (``pretrained_cfg["classifier"]``), whose keys are dropped.
    ValueError for an unknown model name, a missing/unreadable checkpoint or keys that do not match.
    """
    name, checkpoint = _model_and_checkpoint(TIMM_PREFIX, rest, TIMM_EXAMPLE)
    timm = FAMILIES[TIMM_PREFIX].require_package()
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise ValueError(f"unknown timm model {name!r}{' (close: ' + ', '.join(close) + ')' if close else ''}; find "
                         "names with: python -c \"import timm; print(timm.list_models('*resnet*'))\"")
    state = read_state_dict(checkpoint, map_location)
    model = timm.create_model(name, pretrained=False, num_classes=0)
    classifier = model.pretrained_cfg.get("classifier") or ()
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    state = {k: v for k, v in state.items() if not any(k.startswith(f"{head}.") for head in heads)}
    return load_state_strict(model, state, f"timm checkpoint {storage.redact(checkpoint)!r} ({name})").eval()


# -- open_clip -------------------------------------------------------------------------------------------------
OPEN_CLIP_PREFIX = "open_clip:"
OPEN_CLIP_EXAMPLE = "open_clip:ViT-B-32@/path/open_clip_model.safetensors"
#: open_clip's context length when a config gives none (its CLIP models all use 77 tokens).
DEFAULT_CONTEXT_LENGTH = 77
#: What would make open_clip download (config path, what it fetches): refused.
_DOWNLOADS = ((("text_cfg", "hf_model_name"), "a Hugging Face text tower"),
              (("text_cfg", "hf_tokenizer_name"), "a Hugging Face tokenizer"),
              (("vision_cfg", "timm_model_pretrained"), "pretrained timm image weights"))


def _is_config_file(model: str) -> bool:
    return model.lower().endswith(".json")


def _open_clip_files(rest: str) -> list[tuple[str, str]]:
    model, checkpoint = _model_and_checkpoint(OPEN_CLIP_PREFIX, rest, OPEN_CLIP_EXAMPLE)
    config = [(model, "open_clip model config")] if _is_config_file(model) else []
    return config + [(checkpoint, "open_clip checkpoint")]


def _open_clip_config(open_clip: ModuleType, model: str) -> dict[str, Any]:
    """The model config of a built-in name or a config JSON; ValueError for an unknown name, a bad file, or a
    model that would download something."""
    if _is_config_file(model):
        require_file(model, "open_clip model config")
        try:
            raw = json.loads(storage.read_text(model))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"open_clip model config {storage.redact(model)!r} is not JSON: {exc}") from exc
        config = raw.get("model_cfg", raw) if isinstance(raw, dict) else None
        if not isinstance(config, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(config):
            raise ValueError(f"open_clip model config {storage.redact(model)!r} needs embed_dim, vision_cfg and text_cfg "
                             "(open_clip's model config format)")
    else:
        if model.replace("/", "-") not in open_clip.list_models():
            raise ValueError(f"unknown open_clip model {model!r}: use a built-in name (python -c \"import open_clip; "
                             "print(open_clip.list_models())\") or the path of a model config JSON")
        config = open_clip.get_model_config(model.replace("/", "-"))
    fetched = [what for (tower, key), what in _DOWNLOADS if config.get(tower, {}).get(key)]
    if fetched or "multimodal_cfg" in config:
        reason = (f"needs {' and '.join(fetched)} from the Hugging Face Hub, and influencegate never downloads" if fetched
                  else "is a CoCa model, whose image tower also returns tokens")
        raise ValueError(f"open_clip model {storage.redact(model)!r} {reason}: use a CLIP model with open_clip's own "
                         "towers and tokenizer (e.g. ViT-B-32, RN50)")
    return config


def _create_open_clip(open_clip: ModuleType, model: str, config: dict[str, Any]) -> nn.Module:
    """``open_clip.create_model`` with random weights, of a built-in name or (``local-dir:``, a folder that
    holds it) of a config file's ``config``; without open_clip's warnings (root logger) that the weights are
    random: ours are loaded right after."""
    factory = os.path.join("open_clip", "factory.py")

    def drop(record: logging.LogRecord) -> bool:
        return not (record.pathname.endswith(factory) and record.levelno == logging.WARNING)

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        if not _is_config_file(model):
            return open_clip.create_model(model.replace("/", "-"), pretrained=None)
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
            return open_clip.create_model(f"local-dir:{folder}", pretrained=None)
    finally:
        root.removeFilter(drop)


class OpenClipTextEncoder:
    """Captions -> N x embed_dim float32 on the CPU: open_clip's ``encode_text`` (not normalised) of the
    model's tokenizer's tokens, in batches of ``batch_size``, on ``device``, without gradient."""

    def __init__(self, model: nn.Module, tokenizer: Callable[[Sequence[str]], torch.Tensor],
                 device: MapLocation = "cpu", batch_size: int = 256) -> None:
        self.model, self.tokenizer, self.device, self.batch_size = model, tokenizer, device, batch_size

    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        captions = list(captions)
        model = self.model.to(self.device).eval()
        with torch.no_grad():
            return torch.cat([model.encode_text(self.tokenizer(captions[i:i + self.batch_size]).to(self.device))
                              .float().cpu() for i in range(0, len(captions), self.batch_size)])


def load_open_clip(rest: str, map_location: MapLocation = "cpu",
                   device: MapLocation = "cpu") -> tuple[nn.Module, OpenClipTextEncoder]:
    """``open_clip:<model>@<checkpoint>`` (``rest`` without the prefix): (image tower: images B x 3 x H x W ->
    B x embed_dim, text encoder: captions -> N x embed_dim), both of the same CLIP model in eval mode.

    The checkpoint (``.safetensors``, or a torch file with a plain or ``{"state_dict": ...}`` state dict, a DDP
    ``module.`` prefix removed) must match the model's keys exactly. The tokenizer is open_clip's CLIP BPE
    tokenizer, shipped in its wheel, with the config's context length. ``device``: where the text encoder runs.
    """
    model_spec, checkpoint = _model_and_checkpoint(OPEN_CLIP_PREFIX, rest, OPEN_CLIP_EXAMPLE)
    open_clip = FAMILIES[OPEN_CLIP_PREFIX].require_package()
    config = _open_clip_config(open_clip, model_spec)
    state = read_state_dict(checkpoint, map_location)
    model = _create_open_clip(open_clip, model_spec, config)
    what = f"open_clip checkpoint {storage.redact(checkpoint)!r} ({storage.redact(model_spec)})"
    model = load_state_strict(model, state, what).eval()
    text_cfg = config["text_cfg"]
    tokenizer = open_clip.SimpleTokenizer(context_length=text_cfg.get("context_length", DEFAULT_CONTEXT_LENGTH),
                                          **text_cfg.get("tokenizer_kwargs", {}))
    return model.visual, OpenClipTextEncoder(model, tokenizer, device)


# -- the registry ----------------------------------------------------------------------------------------------
TORCHSCRIPT_PREFIX = "torchscript:"
FAMILIES: dict[str, EncoderFamily] = {family.prefix: family for family in (
    EncoderFamily(TORCHVISION_PREFIX, "torchvision:<name>", lambda rest, _: build_encoder(TORCHVISION_PREFIX + rest),
                  lambda rest: []),
    EncoderFamily(TIMM_PREFIX, "timm:<name>@<checkpoint>", load_timm, _timm_files, "timm", "timm"),
    EncoderFamily(OPEN_CLIP_PREFIX, "open_clip:<model>@<checkpoint>", lambda rest, where: load_open_clip(rest, where)[0],
                  _open_clip_files, "open_clip", "clip", load_open_clip),
    EncoderFamily(TORCHSCRIPT_PREFIX, "torchscript:<path>", read_torchscript,
                  lambda rest: [(rest, "TorchScript file")]),
)}


def split_spec(spec: str | os.PathLike) -> tuple[EncoderFamily | None, str]:
    """(family, rest of the spec) for a spec with a registered prefix, else (None, the spec as a location)."""
    text = os.fspath(spec)
    for prefix, family in FAMILIES.items():
        if text.startswith(prefix):
            return family, text[len(prefix):]
    return None, text


def encoder_spec_problem(spec: str | os.PathLike) -> str | None:
    """The one-line reason why ``load_encoder(spec)`` cannot work, found without loading anything: a missing
    optional package, a timm/open_clip spec without ``@<checkpoint>``, a file that is not there (URLs are
    checked on their store). None when none is found (loading can still fail: an unknown model name, keys
    that do not match)."""
    family, rest = split_spec(spec)
    try:
        if family is None:
            require_file(rest, "encoder checkpoint")
            return None
        if family.package is not None and importlib.util.find_spec(family.package) is None:
            return family.missing_package()
        for location, what in family.files(rest):
            require_file(location, what)
    except ValueError as exc:  # a malformed spec, a missing file, a store without its driver (StorageError)
        return str(exc)
    return None
