"""The commands that run a ZenML pipeline: `audit` / `demo` (the image audit) and `audit-pairs` (the pair audit;
`align` is its former name, kept as an alias). Exit 0 approved, 1 rejected by the data, 2 usage or input
error, 3 infrastructure fault (tracking, disk). ZenML, MLflow, Great Expectations and Evidently are imported
only when one of these runs."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from influencegate.cli.common import (EXIT_APPROVED, EXIT_FAULT, EXIT_REJECTED, RUN_DIR_HELP, UsageError,
                                      describe_incremental, fail)
from influencegate.data.folder_walk import describe_skipped

TELEMETRY_OFF = {"ZENML_ANALYTICS_OPT_IN": "false", "GX_ANALYTICS_ENABLED": "false",
                 "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
#: Per audit kind: the runner in `influencegate.pipelines`, the ZenML pipeline it runs, the run directory label.
RUNNERS = {"images": ("run_audit", "dataset_audit_pipeline"), "pairs": ("run_pair_audit", "pair_audit_pipeline")}


def mlops_env() -> None:
    """Turn the tools' telemetry off (unless the environment sets it)."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)


def quiet_logs() -> None:
    """Quiet the tools' info logs; a step that fails with an error reported in one line (an input error, a
    tracking outage) is logged by ZenML without its traceback (the ZenML store keeps it)."""
    import logging

    from influencegate.integrations.mlflow import TrackingUnavailable
    from influencegate.integrations.zenml.step_failures import quiet_step_tracebacks

    for name in ("great_expectations", "mlflow", "alembic", "evidently"):
        logging.getLogger(name).setLevel(logging.WARNING)
    quiet_step_tracebacks((ValueError, TrackingUnavailable))


def _with_run_dir(config: dict[str, Any], run_dir: str | None, label: str) -> dict[str, Any]:
    """The config with its tracking.run_dir set: --run-dir, else the config's, else a new folder under
    ./influencegate_runs (named by time and `label`). A folder that already holds a run is a usage error."""
    from influencegate.integrations.mlflow import new_run_dir
    from influencegate.integrations.mlflow.run_dir import RUN_FILE

    tracking = dict(config["parameters"].get("tracking") or {})
    folder = Path(run_dir or tracking.get("run_dir") or new_run_dir(label=label))
    if (folder / RUN_FILE).exists():
        raise UsageError(f"run directory {str(folder)!r} already holds a run (sync it, or give another --run-dir)")
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"run directory {str(folder)!r} is not a folder")
    tracking["run_dir"] = str(folder)
    return {**config, "parameters": {**config["parameters"], "tracking": tracking}}


def _fault(exc: BaseException, config: dict[str, Any], failure: Any) -> str | None:
    """The one-line message of an infrastructure fault (tracking store, ZenML store, disk), None for others.
    A tracking outage is read from the run directory too (upload.json), and a step's OSError from the ZenML
    store (`failure`, a StepFailure or None), since an orchestrator wraps both."""
    from influencegate.integrations.mlflow import TrackingUnavailable, read_upload

    upload = read_upload(config["parameters"]["tracking"]["run_dir"])
    if upload.get("status") == "failed":
        return str(upload.get("error"))
    if isinstance(exc, TrackingUnavailable):
        return str(exc)
    if isinstance(exc, OSError):  # disk full, permissions, a store's connection refused (requests errors too)
        return f"{type(exc).__name__}: {exc}"
    if failure is not None and failure.kind is not None and issubclass(failure.kind, OSError):
        return f"{failure.kind.__name__} in step {failure.line()}"
    return None


def _step_failure(exc: BaseException, config: dict[str, Any], pipeline: str) -> Any:
    """The failed step of this run (a StepFailure: step, exception class, message), read from the ZenML store
    by the run's unique run directory; None when no step failed with a recorded exception. An orchestrator
    that re-raises the step's own exception (fail fast) gives it directly."""
    from influencegate.integrations.zenml.step_failures import StepFailure, failed_step

    try:
        found = failed_step(pipeline, config["parameters"]["tracking"]["run_dir"])
    except Exception:  # the ZenML store itself is unreachable: the failure stays unexplained
        found = None
    if found is None and isinstance(exc, (ValueError, OSError)):
        return StepFailure("(unnamed)", type(exc), str(exc))
    return found


def pair_lines(run_dir: str) -> list[str]:
    """The worst pairs (combined score, CLIP score beside it) and the removal effects of a pair audit, read back
    from the files its run directory holds (what the MLflow run holds)."""
    import pandas as pd

    from influencegate.integrations.mlflow import ARTIFACTS
    from influencegate.integrations.mlflow.run_dir import ARTIFACTS_DIR
    from influencegate.report.pair_summary import WORST_PAIRS, removal_lines, worst_pair_lines

    folder = Path(run_dir) / ARTIFACTS_DIR
    lines = [f"  the {WORST_PAIRS} worst pairs (combined score: robust z against the reference; CLIP score: cosine):",
             *worst_pair_lines(pd.read_parquet(folder / ARTIFACTS["scores_parquet"]))]
    effects = folder / ARTIFACTS["removal_effects"]
    if effects.is_file():
        lines += [f"  remove these and the predicted effect (ECIF edit, no retraining; ids: "
                  f"{ARTIFACTS['removed_pairs']}, trace-back: {ARTIFACTS['traceback_plain']}, "
                  f"{ARTIFACTS['traceback_relative']}):", *removal_lines(pd.read_csv(effects))]
    return lines


def _run_config(config: dict[str, Any], kind: str) -> int:
    """Run the pipeline of `kind` for a loaded config; the exit code of its decision (3: infrastructure fault)."""
    from influencegate import pipelines

    runner, pipeline = RUNNERS[kind]

    start = time.perf_counter()
    try:
        decision, run = getattr(pipelines, runner)(config)
    except Exception as exc:  # a failed pipeline is never an approval
        failure = _step_failure(exc, config, pipeline)
        fault = _fault(exc, config, failure)
        if fault:
            print(f"influencegate: infrastructure fault, dataset NOT approved: {fault}", file=sys.stderr)
            return EXIT_FAULT
        if failure is not None and failure.kind is not None and issubclass(failure.kind, ValueError):
            return fail(f"step {failure.line()} (input error: dataset NOT approved)")
        print(f"influencegate: audit failed, dataset NOT approved: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    mlflow_info = decision.get("mlflow") or {}
    print(f"\n{decision['status'].upper()}: {decision['dataset_name']} version {decision['dataset_version']} "
          f"(suite {decision['suite']['name']} {decision['suite']['hash']}, {time.perf_counter() - start:.0f} s)")
    for reason in decision.get("reasons", []):
        print(f"  failed: {reason}")
    counts = decision.get("dataset")
    if counts:
        skipped = (f"; skipped in the folder: {describe_skipped(counts['skipped'])}"
                   if any(counts.get("skipped", {}).values()) else "")
        print(f"  dataset: {counts['n_rows']} rows, {counts['n_readable']} readable, {counts['n_failed']} failed"
              + skipped)
    if decision.get("incremental"):
        print(f"  incremental: {describe_incremental(decision['incremental'])}")
    if kind == "pairs":
        print("\n".join(pair_lines(config["parameters"]["tracking"]["run_dir"])))
    print(f"  ZenML run: {run.name}")
    if mlflow_info.get("run_dir"):
        print(f"  run directory: {mlflow_info['run_dir']}")
    if mlflow_info:
        print(f"  MLflow run: {mlflow_info.get('run_id')} at {mlflow_info.get('tracking_uri')}")
        if mlflow_info.get("ui_command"):
            print(f"  start the MLflow UI: {mlflow_info['ui_command']}")
        if mlflow_info.get("runs_url"):
            print(f"  open: {mlflow_info['runs_url']}")
    return EXIT_APPROVED if decision.get("approved") is True else EXIT_REJECTED


def run_config_file(kind: str, config_path: str | None, overrides: list[str], run_dir: str | None = None) -> int:
    """Load a run config of `kind` ("images" | "pairs"; config_path None: the packaged default), check its
    inputs, and run its pipeline; exit code = the decision (3 for an infrastructure fault)."""
    mlops_env()
    if config_path is not None and not Path(config_path).is_file():
        raise UsageError(f"config file not found: {config_path!r}")
    from influencegate.pipelines import ConfigError, load_config, preflight

    try:
        config = load_config(kind, config_path, overrides)
        preflight(config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    quiet_logs()
    label = str(config["parameters"]["dataset"].get("name") or "audit") if kind == "images" else "pairs"
    return _run_config(_with_run_dir(config, run_dir, label), kind)


def _location(value: str) -> str:
    """A local path made absolute (relative to the working folder, not the config's); a URL unchanged."""
    return value if "://" in value else str(Path(value).expanduser().resolve())


def cmd_audit(args: argparse.Namespace) -> int:
    """Run dataset_audit_pipeline with a YAML config; exit code = the gate's decision. --since and --resume-dir
    set parameters.influence.since and .resume_dir."""
    overrides = [*(args.set or []),
                 *(f"influence.{key}={_location(value)}" for key, value in (("since", args.since),
                                                                            ("resume_dir", args.resume_dir)) if value)]
    return run_config_file("images", args.config, overrides, args.run_dir)


def cmd_demo(args: argparse.Namespace) -> int:
    """The embedded default audit (the packaged audit_digits.yaml, copied in the repository's configs/)."""
    return run_config_file("images", None, args.set or [], args.run_dir)


def cmd_audit_pairs(args: argparse.Namespace) -> int:
    """Run pair_audit_pipeline with a YAML config (default: the packaged pairs_digits.yaml); exit = the decision."""
    return run_config_file("pairs", args.config, args.set or [], args.run_dir)


def add_parsers(sub: Any) -> None:
    """The `audit-pairs` (alias `align`), `demo` and `audit` subcommands."""
    pairs = sub.add_parser("audit-pairs", aliases=["align"],
                           help="audit image-text pairs with ECIF through ZenML; exit 0 approved, 1 rejected, "
                                "2 input error, 3 infrastructure fault")
    pairs.add_argument("config", nargs="?", help="YAML config (default: the packaged pairs_digits.yaml)")
    pairs.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value")
    pairs.add_argument("--run-dir", help=RUN_DIR_HELP)
    pairs.set_defaults(func=cmd_audit_pairs)

    demo = sub.add_parser("demo", help="audit the embedded default (digits) end to end through ZenML")
    demo.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value")
    demo.add_argument("--run-dir", help=RUN_DIR_HELP)
    demo.set_defaults(func=cmd_demo)

    audit = sub.add_parser("audit", help="audit a dataset version with a YAML config; exit 0 approved, 1 rejected, "
                                         "2 input error, 3 infrastructure fault")
    audit.add_argument("config", nargs="?", help="YAML config (default: the packaged audit_digits.yaml, which "
                       "--set overrides, e.g. --set dataset.source=s3://bucket/shards/{000000..000099}.tar)")
    audit.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. scorer.rank=32")
    audit.add_argument("--run-dir", help=RUN_DIR_HELP)
    audit.add_argument("--resume-dir", metavar="DIR", help="keep the fit and the scores here (parameters.influence."
                       "resume_dir): an interrupted audit resumes there, and the next version's audit names it --since")
    audit.add_argument("--since", metavar="DIR",
                       help="the --resume-dir of the audit of an earlier version with the same encoder checkpoint and "
                            "scorer (parameters.influence.since): this version appends samples to it, so only the new "
                            "ones are scored (the old scores are kept while a re-check of 200 of them holds Spearman "
                            ">= 0.99); duplicates and outliers are still found over every sample")
    audit.set_defaults(func=cmd_audit)
