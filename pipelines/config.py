"""Run configs of both pipelines: YAML files (a ZenML run config whose `parameters` are the pipeline's), one
pydantic schema per audit kind and one loader, `load_config(kind, path, overrides)`.

Top-level keys: `parameters` and the ZenML run options (`run_name`, `enable_cache`, `settings`, `tags`).
The image audit's parameters are dataset, encoder, scorer, influence, findings, suite, gate, tracking (the packaged
default `influencegate/resources/audit_digits.yaml`); the pair audit's are pairs, reference, ecif, suite,
tracking (`influencegate/resources/pairs_digits.yaml`); both are copied in the repository's configs/.
Relative paths of the suite, the sources, the encoder checkpoint and the influence directories are resolved against the config file's
folder; a suite not found there is looked up among the packaged suites. Any of them may be an fsspec URL.
Every problem is a ConfigError of one line naming the key (the CLI exits 2).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml
from pydantic import ValidationError

from influencegate import resources
from influencegate.data import DIGITS_CAPTIONS, storage
from influencegate.pipelines.schema import RUN_OPTIONS, SCHEMAS, Kind, PairAuditParameters, one_line

#: The packaged default config of each kind (`influencegate demo`, `influencegate audit-pairs`).
DEFAULT_CONFIG_PATHS = {"images": resources.path(resources.AUDIT_CONFIG),
                        "pairs": resources.path(resources.PAIRS_CONFIG)}


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
                child = {} if child is None else {"source": child}
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


def normalise(kind: Kind, config: Mapping[str, Any], base: Path | None = None) -> dict[str, Any]:
    """Validate a raw config of `kind` against its schema, fill defaults and resolve relative paths against
    `base` (the config file's folder; None: the packaged resources). Returns {"parameters": {...}, <the run
    options given>}; ConfigError naming the key for any problem."""
    base = base or resources.folder()
    schema = SCHEMAS[kind]
    try:
        parsed = schema.model_validate(dict(config))
    except ValidationError as exc:
        raise ConfigError(one_line(exc, schema)) from None
    out = parsed.model_dump(include=set(parsed.model_fields_set) & set(RUN_OPTIONS))
    given = dict(config.get("parameters") or {})
    params = parsed.parameters.model_dump()
    params["suite"] = resolve_relative(params["suite"], base, resources.folder())
    if kind == "images":
        params["dataset"]["source"] = resolve_relative(params["dataset"]["source"], base)
        params["encoder"]["checkpoint"] = resolve_relative(params["encoder"]["checkpoint"], base)
        for key in ("resume_dir", "since"):
            params["influence"][key] = resolve_relative(params["influence"][key], base)
    else:
        _pair_rules(params, parsed.parameters, given, base)
        _check_suite(params)
    return {**out, "parameters": params}


def _pair_rules(params: dict[str, Any], parsed: PairAuditParameters, given: Mapping[str, Any], base: Path) -> None:
    """The pair audit's rules, applied to `params` in place: the embedded pairs against the embedded reference
    use its two disjoint parts (audit, reference); pairs of one's own get no reference (self-influence) unless
    the config names one, and naming the embedded reference for them is an error; `part` applies to
    digits-captions only."""
    for section in ("pairs", "reference"):
        value = params[section]
        if value is None:
            continue
        value["source"] = resolve_relative(value["source"], base)
        if value["source"] != DIGITS_CAPTIONS and not location_exists(value["source"]):
            raise ConfigError(f"{section} source not found: {storage.redact(value['source'])!r} "
                              "(a manifest with path and caption)")
        if value["part"] != "all" and value["source"] != DIGITS_CAPTIONS:
            raise ConfigError(f"parameters.{section}.part applies to {DIGITS_CAPTIONS} only")
    pairs, reference = params["pairs"], params["reference"]
    if reference is None:
        return
    if reference["source"] == DIGITS_CAPTIONS != pairs["source"]:
        if "reference" in given:
            raise ConfigError("the embedded reference (digits-captions) only fits the embedded pairs: set "
                              "parameters.reference to clean pairs of your own, or to null (self-influence)")
        params["reference"] = None  # pairs of one's own and no reference named: self-influence
    elif reference["source"] == pairs["source"] == DIGITS_CAPTIONS:
        # the embedded pairs against the embedded reference: disjoint parts unless set
        if "part" not in parsed.pairs.model_fields_set:
            pairs["part"] = "audit"
        if parsed.reference is not None and "part" not in parsed.reference.model_fields_set:
            reference["part"] = "reference"
        if {pairs["part"], reference["part"]} != {"audit", "reference"}:
            raise ConfigError(f"pairs part {pairs['part']!r} and reference part {reference['part']!r} share digits: "
                              "a reference must be held out (use audit and reference)")


def _check_suite(params: Mapping[str, Any]) -> None:
    """ConfigError when the pair audit's suite is not there."""
    if not location_exists(params["suite"], file=True):
        raise ConfigError(f"expectation suite not found: {storage.redact(params['suite'])!r}")


def load_config(kind: Kind = "images", path: str | Path | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read a YAML run config of `kind` (None: the packaged default of that kind), apply `--set` overrides,
    validate (`influencegate.pipelines.schema`) and fill defaults (`normalise`). Raises ConfigError for any problem."""
    file = Path(path) if path else DEFAULT_CONFIG_PATHS[kind]
    return normalise(kind, apply_overrides(read_yaml_config(file), overrides), file.resolve().parent)
