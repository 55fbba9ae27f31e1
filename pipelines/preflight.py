"""Input checks of a loaded image-audit config before its pipeline starts, so that an input error is exit 2 with
one line and not a failed run: the source and the suite exist (local paths or fsspec URLs), the suite names
only known expectation types and metrics, the encoder checkpoint loads and takes the configured images, and an
incremental audit's previous resume directory is there."""
from __future__ import annotations

from typing import Any, Mapping

from influencegate.data import storage
from influencegate.integrations.great_expectations.suite_check import suite_problem
from influencegate.models import encoder_spec_problem, load_encoder
from influencegate.pipelines.config import ConfigError, location_exists


def preflight(config: Mapping[str, Any]) -> None:
    """Check a config from `load_config` (either kind): its sources exist, its suite parses, names only known
    expectation types and (for the image audit) only metrics the audit produces (`suite_problem`), and the
    encoder checkpoint exists, loads and takes the configured channels (`check_encoder`). ConfigError else."""
    params = config["parameters"]
    if "pairs" in params:
        return  # the pair audit's sources and suite were checked as the config loaded (`config._pair_rules`)
    source = params["dataset"]["source"]
    if source != "digits" and not location_exists(source):
        raise ConfigError(f"dataset source not found: {storage.redact(source)!r} "
                          "(use 'digits', a folder, a manifest or shards)")
    if params["suite"] and not location_exists(params["suite"], file=True):
        raise ConfigError(f"expectation suite not found: {storage.redact(params['suite'])!r}")
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
    check_since(params)


def check_since(params: Mapping[str, Any]) -> None:
    """ConfigError when influence.since is set but its directory is not there, or the encoder is pretrained in
    this run (an incremental audit reuses scores of the same encoder: give its checkpoint)."""
    since = (params.get("influence") or {}).get("since")
    if not since:
        return
    if not location_exists(since):
        raise ConfigError(f"parameters.influence.since: previous version's resume directory not found: "
                          f"{storage.redact(since)!r} (the influence.resume_dir of its audit)")
    if not params["encoder"].get("checkpoint"):
        raise ConfigError("parameters.influence.since needs parameters.encoder.checkpoint: an incremental audit "
                          "reuses the scores of the previous version's encoder, not a freshly pretrained one")


def check_encoder(checkpoint: str, dataset: Mapping[str, Any]) -> None:
    """ConfigError when the encoder cannot be loaded, or (dataset.channels set) cannot take a blank image of
    that many channels at dataset.image_size (default 32 px): found before any data is read."""
    import torch

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
