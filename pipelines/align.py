"""pair_alignment_pipeline: load pairs -> ECIF scores -> figures -> gate -> MLflow -> approval, and its YAML
config (the packaged align_digits.yaml, copied in the repository as configs/align_digits.yaml): `parameters` =
pairs, reference, ecif, suite, tracking."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional, Sequence

from zenml import pipeline

from influencegate import resources
from influencegate.align import DIGITS_CAPTIONS
from influencegate.data import storage
from influencegate.pipelines.config import (RUN_OPTIONS, ConfigError, apply_overrides, check_tracking, location_exists,
                                            read_yaml_config, resolve_relative)
from influencegate.steps import (load_pair_dataset, log_pairs_to_mlflow, record_approval, render_pair_figures,
                                 score_image_text_pairs, validate_and_gate)

DEFAULT_ALIGN_CONFIG_PATH = resources.path(resources.ALIGN_CONFIG)
PAIR_KEYS = ("source", "image_size", "channels", "name", "shuffled_fraction", "seed", "part", "workers")
#: The embedded default: 1,597 digits with templated captions, 20% of them shuffled, measured against the
#: 200 other digits with clean captions (the reference).
DEFAULT_ALIGN_PARAMETERS: dict[str, Any] = {
    "pairs": {"source": DIGITS_CAPTIONS, "part": "audit", "shuffled_fraction": 0.2, "seed": 0},
    "reference": {"source": DIGITS_CAPTIONS, "part": "reference", "shuffled_fraction": 0.0, "seed": 0},
    "ecif": {},
    "suite": "expectations/pairs.json",
    "tracking": {"uri": None, "experiment": "influencegate-pairs", "run_dir": None, "retry_seconds": None},
}


@pipeline(enable_cache=False)
def pair_alignment_pipeline(pairs: Optional[dict] = None, reference: Optional[dict] = None,
                            ecif: Optional[dict] = None, suite: Optional[str] = None,
                            tracking: Optional[dict] = None) -> None:
    """Audit one version of image-text pairs with ECIF; every argument is a section of align_digits.yaml
    (None: the embedded default; `suite` None: the packaged pairs suite). `reference`: clean pairs (same keys
    as `pairs`) whose loss the misalignment score is measured on; None = self-influence (with `pairs` None
    too: the embedded reference)."""
    if pairs is None:
        pairs, reference = DEFAULT_ALIGN_PARAMETERS["pairs"], reference or DEFAULT_ALIGN_PARAMETERS["reference"]
    tracking = tracking or DEFAULT_ALIGN_PARAMETERS["tracking"]
    ref, records = load_pair_dataset(**pairs)
    clean = load_pair_dataset(**reference, id="load_reference_pairs")[0] if reference else None
    scores, summary, info = score_image_text_pairs(ref, clean, ecif or {})
    gallery, roc = render_pair_figures(ref, scores)
    decision, _, docs = validate_and_gate(ref, scores, summary, info, None,
                                          suite or str(resources.path(resources.PAIRS_SUITE)))
    run = log_pairs_to_mlflow(ref, records, scores, summary, info, decision, docs, gallery, roc,
                              tracking_uri=tracking.get("uri"), experiment=tracking.get("experiment"),
                              run_dir=tracking.get("run_dir"), retry_seconds=tracking.get("retry_seconds"))
    record_approval(decision, run)


def load_align_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read a YAML pair-audit config (None: the packaged align_digits.yaml), apply `--set` overrides, validate
    and fill defaults. Sources and the suite may be URLs; a relative suite is looked up in the config file's
    folder, then among the packaged suites. The embedded pairs against the embedded reference use its two
    disjoint parts (audit, reference); pairs of one's own get no reference (self-influence) unless the config
    names one, and naming the embedded reference for them is an error. Returns {"parameters": {...}, <run
    options>}; ConfigError for any problem."""
    from influencegate.ecif import EcifConfig

    file = Path(path) if path else DEFAULT_ALIGN_CONFIG_PATH
    raw = apply_overrides(read_yaml_config(file), overrides)
    base = file.resolve().parent
    unknown = sorted(set(raw) - set(RUN_OPTIONS) - {"parameters"})
    given = dict(raw.get("parameters") or {})
    unknown += sorted(f"parameters.{k}" for k in set(given) - set(DEFAULT_ALIGN_PARAMETERS))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; parameters are {', '.join(DEFAULT_ALIGN_PARAMETERS)}")
    params = {k: copy.deepcopy(given.get(k, v)) for k, v in DEFAULT_ALIGN_PARAMETERS.items()}
    for section in ("pairs", "reference"):
        value = params[section]
        if value is None and section == "reference":
            continue
        if isinstance(value, str):
            value = {"source": value}
        if not isinstance(value, dict) or sorted(set(value) - set(PAIR_KEYS)):
            raise ConfigError(f"parameters.{section} must be a mapping with keys among {', '.join(PAIR_KEYS)}")
        value["source"] = resolve_relative(value.get("source") or DIGITS_CAPTIONS, base)
        if value["source"] != DIGITS_CAPTIONS and not location_exists(value["source"]):
            raise ConfigError(f"{section} source not found: {storage.redact(value['source'])!r} "
                              "(a manifest with path and caption)")
        if value.get("part", "all") != "all" and value["source"] != DIGITS_CAPTIONS:
            raise ConfigError(f"parameters.{section}.part applies to {DIGITS_CAPTIONS} only")
        params[section] = value
    pairs, reference = params["pairs"], params["reference"]
    if reference is not None and reference["source"] == DIGITS_CAPTIONS != pairs["source"]:
        if "reference" in given:
            raise ConfigError("the embedded reference (digits-captions) only fits the embedded pairs: set "
                              "parameters.reference to clean pairs of your own, or to null (self-influence)")
        params["reference"] = None  # pairs of one's own and no reference named: self-influence
    elif reference is not None and reference["source"] == pairs["source"] == DIGITS_CAPTIONS:
        pairs.setdefault("part", "audit")  # the embedded pairs against the embedded reference: disjoint parts
        reference.setdefault("part", "reference")
        if {pairs["part"], reference["part"]} != {"audit", "reference"}:
            raise ConfigError(f"pairs part {pairs['part']!r} and reference part {reference['part']!r} share digits: "
                              "a reference must be held out (use audit and reference)")
    try:
        EcifConfig.from_dict(dict(params["ecif"] or {}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"parameters.ecif: {exc}") from exc
    if not isinstance(params["tracking"], dict):
        raise ConfigError(f"parameters.tracking must be a mapping, got {params['tracking']!r}")
    check_tracking(params["tracking"])
    params["suite"] = resolve_relative(params["suite"], base, resources.folder())
    if not location_exists(params["suite"], file=True):
        raise ConfigError(f"expectation suite not found: {storage.redact(params['suite'])!r}")
    out = {k: copy.deepcopy(v) for k, v in raw.items() if k in RUN_OPTIONS}
    out["parameters"] = params
    return out


def _source(section: Any) -> Any:
    """The source a pairs/reference section names (a mapping or a bare source string)."""
    return section.get("source") if isinstance(section, dict) else section


def run_alignment(config: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Run the pipeline for a config from `load_align_config`; returns (recorded decision, pipeline run).
    The ZenML store is opened first under a lock (`open_store`)."""
    from influencegate.integrations.zenml.store import open_store
    from influencegate.pipelines.audit import recorded_decision

    open_store()
    options = {k: v for k, v in config.items() if k != "parameters"}
    run = pair_alignment_pipeline.with_options(**options)(**config["parameters"])
    return recorded_decision(run), run
