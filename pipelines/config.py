"""Audit run configs: YAML files (a ZenML run config whose `parameters` are the pipeline's).

Top-level keys: `parameters` (dataset, encoder, scorer, suite, gate, tracking: see the packaged default
`influencegate/resources/audit_digits.yaml`, copied in the repository as configs/audit_digits.yaml) and ZenML
run options (`run_name`, `enable_cache`, `settings`, `tags`). Relative paths of the suite, the dataset source
and the encoder checkpoint are resolved against the config file's folder; a suite not found there is looked up
among the packaged suites. Any of them may be an fsspec URL (`influencegate.data.storage`).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from influencegate import resources
from influencegate.data import storage
from influencegate.models import encoder_spec_problem

#: The packaged default audit config (`influencegate demo`).
DEFAULT_CONFIG_PATH = resources.path(resources.AUDIT_CONFIG)
PARAMETERS = ("dataset", "encoder", "scorer", "findings", "suite", "gate", "tracking")
RUN_OPTIONS = ("run_name", "enable_cache", "settings", "tags")
SECTIONS = {
    "dataset": ("source", "image_size", "channels", "name", "workers"),
    "encoder": ("checkpoint", "method", "epochs", "seed", "architecture", "save_to"),
    "gate": ("drift_blocks", "drift_threshold"),
    "tracking": ("uri", "experiment", "run_dir", "retry_seconds"),
}

#: The embedded default (also what the packaged audit_digits.yaml spells out): the digits audited end to end.
DEFAULT_PARAMETERS: dict[str, Any] = {
    "dataset": {"source": "digits"},
    "encoder": {"method": "simclr", "epochs": 10, "seed": 0, "architecture": "small_cnn"},
    "scorer": {},  # InfluenceConfig defaults
    "findings": {},  # FindingsConfig defaults: duplicates and outliers, no fairness groups
    "suite": "expectations/default.json",
    "gate": {"drift_blocks": False, "drift_threshold": None},
    "tracking": {"uri": None, "experiment": "influencegate", "run_dir": None, "retry_seconds": None},
}


class ConfigError(ValueError):
    """A config file or override is wrong (a usage error: the CLI exits 2)."""


def _parse_value(text: str) -> Any:
    """YAML scalar parsing for --set values (numbers, true/false, null, lists)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(config: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides; keys not naming a run option go under `parameters`
    (so `scorer.rank=32` and `parameters.scorer.rank=32` are the same)."""
    config = copy.deepcopy(config)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        parts = key.strip().split(".")
        if parts[0] not in RUN_OPTIONS and parts[0] != "parameters":
            parts = ["parameters", *parts]
        node = config
        for part in parts[:-1]:
            child = node.get(part)
            if child is None or isinstance(child, str):
                child = {} if child is None else {"source": child} if part == "dataset" else child
                node[part] = child
            if not isinstance(child, dict):
                raise ConfigError(f"cannot set {key!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = _parse_value(value)
    return config


def resolve_relative(path: Any, *bases: Path) -> Any:
    """A relative local `path` against the first of the folders `bases` that holds it (an absolute path then).

    Unchanged: URLs (`s3://`, `memory://`, `file://`, any `scheme://`), other `scheme:name` locations
    (`torchvision:resnet50`), 'digits', and a relative path that no base holds.
    """
    if not path or not isinstance(path, str) or path == "digits" or ":" in path.split("/")[0]:
        return path  # the first part of a URL or of torchvision:<name> ends with ':'
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        for base in bases:
            if (base / candidate).exists():
                return str((base / candidate).resolve())
    return str(candidate)


def normalise(config: Mapping[str, Any], base: Path | None = None) -> dict[str, Any]:
    """Validate a raw config and fill defaults. Returns {"parameters": {...}, <run options>}.

    base: the config file's folder (None: the packaged resources, where the default config lives).
    Raises ConfigError naming unknown keys or sections of the wrong type.
    """
    base = base or resources.folder()
    unknown = sorted(set(config) - set(RUN_OPTIONS) - {"parameters"})
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; allowed: parameters, {', '.join(RUN_OPTIONS)}")
    raw = dict(config.get("parameters") or {})
    unknown = sorted(set(raw) - set(PARAMETERS))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {unknown}; allowed: {', '.join(PARAMETERS)}")
    if isinstance(raw.get("dataset"), str):
        raw["dataset"] = {"source": raw["dataset"]}
    params: dict[str, Any] = {}
    for name in PARAMETERS:
        default = copy.deepcopy(DEFAULT_PARAMETERS[name])
        value = raw.get(name, default)
        if isinstance(default, dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"parameters.{name} must be a mapping, got {value!r}")
            # A scorer/findings section replaces the demo's settings (omitted keys: the config class's
            # defaults); the other sections are merged key by key over the defaults.
            value = dict(value) if name in ("scorer", "findings") else {**default, **value}
            allowed = SECTIONS.get(name)
            bad = sorted(set(value) - set(allowed)) if allowed else []
            if bad:
                raise ConfigError(f"unknown key(s) {bad} in parameters.{name}; allowed: {', '.join(allowed)}")
        params[name] = value
    from influencegate import InfluenceConfig

    try:
        InfluenceConfig.from_dict(dict(params["scorer"]))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"parameters.scorer: {exc}") from exc
    from influencegate.findings.run import FindingsConfig

    try:
        FindingsConfig.from_dict(dict(params["findings"]))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"parameters.findings: {exc}") from exc
    check_tracking(params["tracking"])
    # The suite: relative to the config file, else one of the packaged suites (expectations/default.json, ...).
    params["suite"] = resolve_relative(params["suite"], base, resources.folder())
    params["dataset"]["source"] = resolve_relative(params["dataset"].get("source") or "digits", base)
    params["encoder"]["checkpoint"] = resolve_relative(params["encoder"].get("checkpoint"), base)
    out = {k: copy.deepcopy(v) for k, v in config.items() if k in RUN_OPTIONS}
    out["parameters"] = params
    return out


def check_tracking(tracking: Mapping[str, Any]) -> None:
    """ConfigError unless tracking.retry_seconds is unset or a finite number > 0 (seconds an upload may take)."""
    import math

    value = tracking.get("retry_seconds")
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"parameters.tracking.retry_seconds must be a finite number of seconds > 0, got {value!r}")


def read_yaml_config(file: Path) -> dict[str, Any]:
    """The mapping in a YAML config file; ConfigError when it is missing, not YAML or not a mapping."""
    if not file.is_file():
        raise ConfigError(f"config file not found: {str(file)!r}")
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(file)!r} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(file)!r} must hold a mapping")
    return raw


def load_audit_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read a YAML audit config (None: the packaged audit_digits.yaml), apply `--set` overrides, validate.
    Raises ConfigError for any problem."""
    file = Path(path) if path else DEFAULT_CONFIG_PATH
    return normalise(apply_overrides(read_yaml_config(file), overrides), file.resolve().parent)


def location_exists(location: str, file: bool = False) -> bool:
    """Whether a local path or fsspec URL is there (`file`: is a file); a shard pattern counts when any of its
    locations exists (a brace range names shards whether or not they exist: the missing ones become error rows).
    ConfigError when it cannot be checked: no driver for the URL's scheme, or the store refused."""
    try:
        if file:
            return storage.is_file(location)
        locations = storage.expand(location) if storage.is_pattern(location) else [location]
        return any(storage.exists(each) for each in locations)  # stops at the first that exists
    except storage.StorageError as exc:
        raise ConfigError(str(exc)) from exc
    except OSError as exc:  # permissions, network
        raise ConfigError(f"cannot check {storage.redact(location)!r}: {exc}") from exc


def preflight(config: Mapping[str, Any]) -> None:
    """Input checks before a pipeline starts (so input errors are exit 2, not a failed run): the dataset source
    exists (local paths or URLs, through `influencegate.data.storage`); the suite parses, names only known
    expectation types and, in the summary table, only metrics the audit produces (`suite_check`); the encoder
    checkpoint exists, loads and takes the configured channels (`check_encoder`)."""
    params = config["parameters"]
    source = params["dataset"]["source"]
    if source != "digits" and not location_exists(source):
        raise ConfigError(f"dataset source not found: {storage.redact(source)!r} "
                          "(use 'digits', a folder, a manifest or shards)")
    if params["suite"] and not location_exists(params["suite"], file=True):
        raise ConfigError(f"expectation suite not found: {storage.redact(params['suite'])!r}")
    from influencegate.integrations.great_expectations.suite_check import suite_problem

    problem = suite_problem(params["suite"], params.get("findings"))
    if problem:
        raise ConfigError(problem)
    checkpoint = params["encoder"].get("checkpoint")
    problem = encoder_spec_problem(str(checkpoint)) if checkpoint else None
    if problem:
        raise ConfigError(problem)
    if not checkpoint and not params["encoder"].get("method"):
        raise ConfigError("parameters.encoder needs a checkpoint or a pretraining method")
    if checkpoint:
        check_encoder(str(checkpoint), params["dataset"])


def check_encoder(checkpoint: str, dataset: Mapping[str, Any]) -> None:
    """ConfigError when the encoder cannot be loaded, or (dataset.channels set) cannot take a blank image of
    that many channels at dataset.image_size (default 32 px): found before any data is read."""
    import torch

    from influencegate.models import load_encoder

    try:
        encoder = load_encoder(checkpoint)
    except (ValueError, RuntimeError, OSError, KeyError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ConfigError(f"encoder {storage.redact(checkpoint)!r} cannot be loaded: {reason}") from None
    channels, size = dataset.get("channels"), dataset.get("image_size") or 32
    if not channels:
        return
    try:
        with torch.no_grad():
            encoder.eval()(torch.zeros(1, int(channels), int(size), int(size)))
    except RuntimeError as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"encoder {storage.redact(checkpoint)!r} cannot take {channels}-channel images of "
                          f"{size} x {size} px (parameters.dataset.channels, image_size): {reason}") from None
