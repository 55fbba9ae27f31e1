"""The `influencegate` command.

    influencegate score DATA --out scores.parquet [--encoder CKPT | --pretrain simclr --epochs N] [scorer options]
                        [--groups COL,COL] [--no-findings] [--resume-dir DIR [--shard-size N]]
    torchrun --nproc_per_node=G -m influencegate.cli score DATA --encoder CKPT ...   the same over G processes
    influencegate score-pairs DATA --out pairs.parquet [--reference CLEAN_DATA]   ECIF scores of image-text pairs
    influencegate demo                               the embedded default (digits) end to end through ZenML
    influencegate audit [CONFIG.yaml] [--set k=v ...] [--run-dir DIR]   exit 0 approved, 1 rejected by the data,
                                                     2 usage or input error, 3 infrastructure fault (tracking, disk)
    influencegate align [CONFIG.yaml] [--set k=v ...] [--run-dir DIR]   pair audit through ZenML; the same exit codes
    influencegate sync RUN_DIR [--uri URI]           upload a run directory an outage kept to MLflow (exit 0 or 3)
    influencegate status NAME                        versions of a dataset and which one is approved

`score` and `score-pairs` are pure core (torch/numpy/pandas). ZenML, MLflow, Great Expectations and Evidently are imported
only inside `demo`, `audit`, `align`, `sync` and `status`.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

EXIT_APPROVED, EXIT_REJECTED, EXIT_USAGE, EXIT_FAULT = 0, 1, 2, 3
ENCODER_SPECS = ("a checkpoint path or URL (ours, solo-learn, TorchScript), torchvision:<name>, timm:<name>@<checkpoint>, "
                 "open_clip:<model or config.json>@<checkpoint> or torchscript:<path>")
TELEMETRY_OFF = {"ZENML_ANALYTICS_OPT_IN": "false", "GX_ANALYTICS_ENABLED": "false",
                 "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


class UsageError(Exception):
    """A user mistake: reported as one line, exit code 2."""


def _fail(message: str) -> int:
    print(f"influencegate: error: {message}", file=sys.stderr)
    return EXIT_USAGE


# -- score (core only) -------------------------------------------------------------------------------------
def _scorer_config(args: argparse.Namespace) -> Any:
    from influencegate import InfluenceConfig

    values = {k: getattr(args, k) for k in ("rank", "curvature", "draws", "noise", "sigma", "projection", "damping",
                                            "batch_size", "precision", "seed", "device", "target_stability")
              if getattr(args, k) is not None}
    if values.get("target_stability") == "none":
        values["target_stability"] = None
    try:
        return InfluenceConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from exc


def _check_encoder(spec: str | None) -> None:
    """UsageError with the one-line problem of an --encoder spec (a missing file or @checkpoint, an extra that
    is not installed), found before anything is loaded."""
    from influencegate.models import encoder_spec_problem

    problem = encoder_spec_problem(spec) if spec else None
    if problem:
        raise UsageError(problem)


def cmd_score(args: argparse.Namespace) -> int:
    """Score DATA and write the scores table (parquet, or csv by extension)."""
    import torch.distributed

    from influencegate.audit import find_issues, load_or_pretrain, score_dataset, summary_stats
    from influencegate.data import DatasetError, load_images
    from influencegate.data.folder_walk import describe_skipped
    from influencegate.influence.distributed import init_from_env, launched_with_ranks

    config = _scorer_config(args)
    _check_out(args.out)
    if args.encoder and args.pretrain:
        raise UsageError("give either --encoder or --pretrain, not both")
    if launched_with_ranks() and not args.encoder:
        raise UsageError("under torchrun every rank must score the same encoder: pretrain once (score --pretrain "
                         "... --save-encoder CKPT), then launch torchrun with --encoder CKPT")
    distributed = init_from_env(config.device)
    _check_encoder(args.encoder)
    try:
        dataset = load_images(args.data, image_size=args.image_size, channels=args.channels, workers=args.workers)
    except DatasetError as exc:
        raise UsageError(str(exc)) from exc
    skipped = f"; skipped in the folder: {describe_skipped(dataset.skipped)}" if dataset.skipped else ""
    print(f"dataset {dataset.name} version {dataset.version}: {len(dataset)} readable, {len(dataset.failed)} failed"
          + skipped)
    groups = [g.strip() for g in (args.groups or "").split(",") if g.strip()]
    columns = [c for c in dataset.records.columns if c not in ("sample_id", "path", "error")]
    if [g for g in groups if g not in columns]:
        raise UsageError(f"--groups names column(s) {[g for g in groups if g not in columns]} that the data does "
                         f"not have; its columns are {columns}")
    try:
        encoder, _, seconds = load_or_pretrain(dataset, args.encoder, args.pretrain or "simclr", args.epochs, args.seed or 0,
                                               save_to=args.save_encoder)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if seconds:
        print(f"pretrained {args.pretrain or 'simclr'} for {args.epochs} epochs in {seconds:.1f} s")
    try:
        table, seconds, resume = score_dataset(dataset, encoder, config, args.resume_dir, args.shard_size, distributed,
                                               args.since)
    except ValueError as exc:  # a resume directory of another run, a bad shard size, too few samples for the ranks
        raise UsageError(str(exc)) from exc
    if distributed:  # every rank holds the table; rank 0 runs the findings and writes it
        rank = torch.distributed.get_rank()
        torch.distributed.destroy_process_group()
        if rank != 0:
            return 0
    if "incremental" in resume:
        done = resume["incremental"]
        print(f"incremental: {done['new']} new samples scored, {done['previous']} previous scores "
              + ("kept" if done["kept_old_scores"] else "scored again")
              + f" (re-check of {done['recheck_samples']}: Spearman {done['recheck_spearman']:.4f}, "
              f"tolerance {done['tolerance']})")
    if "shards" in resume:
        from influencegate.data.storage import redact

        print(f"{redact(args.resume_dir)}: {resume['shards_reused']} of {resume['shards']} shards reused"
              + (", fit reused" if resume["fit_reused"] else ""))
    texts: dict[str, str] = {}
    findings_error = None
    if not args.no_findings:
        try:
            found = find_issues(dataset, encoder, table, {"groups": groups}, device=config.device)
            table, texts = found.table, found.texts
        except ValueError as exc:  # too few samples for a finding, a group column without usable values...
            findings_error = f"findings not run: {exc}; the scores table was written without them (or pass --no-findings)"
    out = args.out
    _write_table(table, out)
    stats = summary_stats(table)
    print(f"scored {int(stats['n_scored'])} samples with {resume['score_draws']} draws in {seconds:.1f} s -> {out} "
          f"(median log_influence {stats['log_influence_q50']:.3f}, {int(stats['n_high_influence'])} high influence)")
    for text in texts.values():
        print(text)
    if findings_error:
        raise UsageError(findings_error)
    return 0


def cmd_score_pairs(args: argparse.Namespace) -> int:
    """ECIF scores of the image-text pairs in DATA, written as the pair scores table (parquet or csv)."""
    from influencegate.align import (DIGITS_CAPTIONS, known_misalignment, load_pairs, pair_summary_stats,
                                     score_pair_dataset)
    from influencegate.data import DatasetError
    from influencegate.ecif import EcifConfig
    from influencegate.models import load_image_text_encoders

    _check_out(args.out)
    _check_encoder(args.encoder)
    try:
        config = EcifConfig.from_dict({"device": args.device or "cpu", "seed": args.seed or 0})
        # the embedded pairs against the embedded reference: its two disjoint parts
        parts = ("audit", "reference") if args.data == args.reference == DIGITS_CAPTIONS else ("all", "all")
        dataset = load_pairs(args.data, image_size=args.image_size, channels=args.channels,
                             shuffled_fraction=args.shuffled_fraction, seed=args.seed or 0, part=parts[0],
                             workers=args.workers)
        reference = load_pairs(args.reference, image_size=args.image_size, channels=args.channels,
                               shuffled_fraction=0.0, seed=args.seed or 0, part=parts[1],
                               workers=args.workers) if args.reference else None
    except (DatasetError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    print(f"pairs {dataset.name} version {dataset.version}: {len(dataset)} readable, {len(dataset.failed)} failed"
          + (f"; reference {reference.name} ({len(reference)} pairs)" if reference is not None else "; no reference: "
             "self-influence"))
    try:
        image_encoder, text_encoder = (load_image_text_encoders(args.encoder, device=config.device) if args.encoder
                                       else (None, None))
        table, scored = score_pair_dataset(dataset, reference, config, image_encoder, text_encoder)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    _write_table(table, args.out)
    stats = pair_summary_stats(table, known_misalignment(dataset), scored["flag_rule"])
    print(f"scored {int(stats['n_scored'])} pairs in {scored['seconds']['total']:.1f} s -> {args.out} "
          f"({int(stats['n_misaligned'])} flagged misaligned)")
    if "misalignment_auroc" in stats:
        print(f"known corruption: AUROC {stats['misalignment_auroc']:.3f} (CLIP-score baseline "
              f"{stats['clip_score_auroc']:.3f})")
    return 0


def _check_out(out: str) -> None:
    """Refuse, before any work is done, an output location that is a folder or whose extension names no
    table format (a usage error: never a silent Parquet file called .txt)."""
    from influencegate.data import storage

    if storage.suffix(out) not in (".parquet", ".csv"):
        raise UsageError(f"--out {storage.redact(out)!r}: the extension names the format; use .parquet or .csv")
    if storage.is_dir(out):
        raise UsageError(f"--out {storage.redact(out)!r} is a folder; give a file name ending in .parquet or .csv")


def _write_table(table: Any, out: str) -> None:
    """Write a table as csv (by extension) or parquet to a local path or URL, atomically: an existing file
    is replaced whole or left as it was (see ``storage.write_bytes``)."""
    import io

    from influencegate.data import storage

    buffer = io.BytesIO()
    if storage.suffix(out) == ".csv":
        table.to_csv(buffer, index=False)
    else:
        table.to_parquet(buffer, index=False)
    try:
        storage.write_bytes(out, buffer.getvalue())
    except OSError as exc:
        raise UsageError(f"cannot write --out {storage.redact(out)!r}: {exc}") from exc


# -- MLOps commands (lazy imports) ----------------------------------------------------------------------------
def _mlops_env() -> None:
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)


def _quiet_logs() -> None:
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


#: The ZenML pipeline each runner of `influencegate.pipelines` runs.
PIPELINES = {"run_audit": "dataset_audit_pipeline", "run_alignment": "pair_alignment_pipeline"}


def _step_failure(exc: BaseException, config: dict[str, Any], runner: str) -> Any:
    """The failed step of this run (a StepFailure: step, exception class, message), read from the ZenML store
    by the run's unique run directory; None when no step failed with a recorded exception. An orchestrator
    that re-raises the step's own exception (fail fast) gives it directly."""
    from influencegate.integrations.zenml.step_failures import StepFailure, failed_step

    try:
        found = failed_step(PIPELINES[runner], config["parameters"]["tracking"]["run_dir"])
    except Exception:  # the ZenML store itself is unreachable: the failure stays unexplained
        found = None
    if found is None and isinstance(exc, (ValueError, OSError)):
        return StepFailure("(unnamed)", type(exc), str(exc))
    return found


def _run_config(config: dict[str, Any], runner: str = "run_audit") -> int:
    from influencegate import pipelines

    start = time.perf_counter()
    try:
        decision, run = getattr(pipelines, runner)(config)
    except Exception as exc:  # a failed pipeline is never an approval
        failure = _step_failure(exc, config, runner)
        fault = _fault(exc, config, failure)
        if fault:
            print(f"influencegate: infrastructure fault, dataset NOT approved: {fault}", file=sys.stderr)
            return EXIT_FAULT
        if failure is not None and failure.kind is not None and issubclass(failure.kind, ValueError):
            return _fail(f"step {failure.line()} (input error: dataset NOT approved)")
        print(f"influencegate: audit failed, dataset NOT approved: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    mlflow_info = decision.get("mlflow") or {}
    print(f"\n{decision['status'].upper()}: {decision['dataset_name']} version {decision['dataset_version']} "
          f"(suite {decision['suite']['name']} {decision['suite']['hash']}, {time.perf_counter() - start:.0f} s)")
    for reason in decision.get("reasons", []):
        print(f"  failed: {reason}")
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


def _audit(config_path: str | None, overrides: list[str], run_dir: str | None = None) -> int:
    """Load (config_path None: the embedded default), check, and run the audit; exit code = the decision
    (3 for an infrastructure fault)."""
    _mlops_env()
    if config_path is not None and not Path(config_path).is_file():
        raise UsageError(f"config file not found: {config_path!r}")
    from influencegate.pipelines.config import ConfigError, load_audit_config, preflight

    try:
        config = load_audit_config(config_path, overrides)
        preflight(config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    _quiet_logs()
    return _run_config(_with_run_dir(config, run_dir, str(config["parameters"]["dataset"].get("name") or "audit")))


def cmd_audit(args: argparse.Namespace) -> int:
    """Run dataset_audit_pipeline with a YAML config; exit code = the gate's decision."""
    return _audit(args.config, args.set or [], args.run_dir)


def cmd_demo(args: argparse.Namespace) -> int:
    """The embedded default audit (the packaged audit_digits.yaml, copied in the repository's configs/)."""
    return _audit(None, args.set or [], args.run_dir)


def cmd_align(args: argparse.Namespace) -> int:
    """Run pair_alignment_pipeline with a YAML config (default: the packaged align_digits.yaml); exit = the decision."""
    _mlops_env()
    if args.config is not None and not Path(args.config).is_file():
        raise UsageError(f"config file not found: {args.config!r}")
    from influencegate.pipelines import ConfigError, load_align_config

    try:
        config = load_align_config(args.config, args.set or [])
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    _quiet_logs()
    return _run_config(_with_run_dir(config, args.run_dir, "pairs"), "run_alignment")


def cmd_sync(args: argparse.Namespace) -> int:
    """Upload a run directory (kept by an audit whose tracking upload failed) to MLflow; exit 0, or 3 when the
    tracking store is still unreachable."""
    _mlops_env()
    from influencegate.integrations.mlflow import (RunDirError, TrackingUnavailable, read_decision, read_run,
                                                   read_upload, upload_run_dir)

    try:
        run = read_run(args.run_dir)
    except RunDirError as exc:
        raise UsageError(str(exc)) from exc
    done = read_upload(args.run_dir)
    uri = args.uri or run["tracking_uri"]
    if done.get("status") == "finished" and done.get("tracking_uri") == uri:
        print(f"already uploaded: MLflow run {done['run_id']} at {uri}")
        return EXIT_APPROVED
    _quiet_logs()
    try:
        info = upload_run_dir(args.run_dir, uri, retry_seconds=args.retry_seconds)
    except TrackingUnavailable as exc:
        print(f"influencegate: infrastructure fault: {exc}", file=sys.stderr)
        return EXIT_FAULT
    decision = read_decision(args.run_dir)
    print(f"uploaded {args.run_dir}: MLflow run {info['run_id']} at {info['tracking_uri']} "
          f"({decision.get('dataset_name')} version {decision.get('dataset_version')}: {decision.get('status')})")
    if info.get("runs_url"):
        print(f"  open: {info['runs_url']}")
    return EXIT_APPROVED


def cmd_status(args: argparse.Namespace) -> int:
    """Print the audited versions of a dataset; exit 0 when one is approved, 1 when none is."""
    _mlops_env()
    from influencegate.integrations.zenml import list_versions

    table = list_versions(args.name)
    if table.empty:
        print(f"no audit of dataset {args.name!r} recorded")
        return EXIT_REJECTED
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(table.assign(created=table["created"].astype(str).str[:19]).to_string(index=False))
    approved = table[table["latest_approved"]]
    if approved.empty:
        print(f"\nno approved version of {args.name!r}")
        return EXIT_REJECTED
    print(f"\napproved: {args.name} version {approved.iloc[0]['dataset_version']}")
    return EXIT_APPROVED


# -- parser --------------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        self.exit(EXIT_USAGE, f"influencegate: error: {message} (see influencegate --help)\n")


def _int_at_least(minimum: int) -> Any:
    """argparse type: an integer >= minimum (a one-line usage error otherwise)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


_non_negative, _positive = _int_at_least(0), _int_at_least(1)
RUN_DIR_HELP = ("write the run (decision, scores, everything logged to MLflow) to this new folder first "
                "(default: a new folder under ./influencegate_runs); `influencegate sync` uploads it after an outage")


def _stability_target(text: str) -> float | str:
    """argparse type: a Spearman target strictly between 0 and 1, or 'none'."""
    if text.strip().lower() == "none":
        return "none"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 or 'none', got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="influencegate", description="Label-free influence auditing of pretraining datasets.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    score = sub.add_parser("score", help="score every sample of a dataset (core only, no MLOps tools)")
    score.add_argument("data", nargs="?", default="digits", help="'digits', a folder of images, a manifest, or "
                       "WebDataset/Parquet shards (a file, a folder or a pattern such as 'shards/{000000..000099}.tar'); "
                       "local or s3://, gs://, memory:// URLs")
    score.add_argument("--out", default="scores.parquet", help="output table (.parquet or .csv)")
    score.add_argument("--encoder", help=f"encoder: {ENCODER_SPECS}")
    score.add_argument("--pretrain", choices=["simclr", "byol", "barlow_twins", "barlow"], help="pretrain an encoder first")
    score.add_argument("--epochs", type=_positive, default=20)
    score.add_argument("--save-encoder", help="write the pretrained encoder here")
    score.add_argument("--image-size", type=int)
    score.add_argument("--workers", type=_non_negative, default=0, help="DataLoader processes that read and decode")
    score.add_argument("--channels", type=int, choices=[1, 3])
    score.add_argument("--device", choices=["cpu", "cuda"])
    score.add_argument("--rank", type=_positive)
    score.add_argument("--curvature", choices=["identity", "diagonal", "raw", "kfac", "ekfac"])
    score.add_argument("--draws", type=_positive, help="perturbation draws per image (the most a score uses)")
    score.add_argument("--target-stability", type=_stability_target,
                       help="fewest draws whose predicted between-seed Spearman reaches this (default 0.95; 'none': "
                            "always --draws)")
    score.add_argument("--noise", choices=["common", "orthogonal", "iid"])
    score.add_argument("--sigma", type=float)
    score.add_argument("--projection", choices=["random", "pca", "identity"])
    score.add_argument("--damping", type=float)
    score.add_argument("--batch-size", type=_positive)
    score.add_argument("--precision", choices=["fp32", "fp64", "bf16", "fp16"])
    score.add_argument("--seed", type=int)
    score.add_argument("--resume-dir", help="keep the fit and the scores shard by shard here (a local directory or "
                                            "a URL: s3://bucket/runs/x, gs://..., memory://...); run the same command "
                                            "again to resume an interrupted run (same config, encoder and data)")
    score.add_argument("--shard-size", type=_positive, default=4096, help="samples per shard with --resume-dir")
    score.add_argument("--since", metavar="DIR",
                       help="the --resume-dir of an earlier version scored with the same --encoder and settings: this "
                            "version appends samples to it, so only the new ones are scored (the old scores are kept "
                            "while a re-check of 200 of them holds Spearman >= 0.99); with --resume-dir, this "
                            "version is kept there as the base of the next")
    score.add_argument("--groups", help="comma-separated group columns of the manifest to audit for fairness")
    score.add_argument("--no-findings", action="store_true",
                       help="scores only: skip duplicates, outliers and the fairness audit")
    score.set_defaults(func=cmd_score)

    pairs = sub.add_parser("score-pairs", help="ECIF misalignment scores of image-text pairs (core only)")
    pairs.add_argument("data", nargs="?", default="digits-captions",
                       help="a manifest with path and caption columns, WebDataset shards (image + .txt) or Parquet "
                       "files with image bytes and a caption column (local or a URL), or 'digits-captions'")
    pairs.add_argument("--out", default="pair_scores.parquet", help="output table (.parquet or .csv)")
    pairs.add_argument("--reference", help="clean pairs (a manifest, or 'digits-captions' with digits-captions data: "
                       "the 200 held-out digits) to measure misalignment on; else self-influence")
    pairs.add_argument("--shuffled-fraction", type=float, default=0.2,
                       help="digits-captions only: share of captions shuffled (known corruption)")
    pairs.add_argument("--encoder", help=f"frozen image encoder: {ENCODER_SPECS}; open_clip:... brings its text "
                                         "encoder too (else MiniLM); default: a SmallCNN pretrained on the images")
    pairs.add_argument("--image-size", type=int)
    pairs.add_argument("--workers", type=_non_negative, default=0, help="DataLoader processes that read and decode")
    pairs.add_argument("--channels", type=int, choices=[1, 3])
    pairs.add_argument("--device", choices=["cpu", "cuda"])
    pairs.add_argument("--seed", type=int)
    pairs.set_defaults(func=cmd_score_pairs)

    align = sub.add_parser("align", help="audit image-text pairs with ECIF through ZenML; exit 0 approved, 1 rejected, "
                                         "2 input error, 3 infrastructure fault")
    align.add_argument("config", nargs="?", help="YAML config (default: the packaged align_digits.yaml)")
    align.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value")
    align.add_argument("--run-dir", help=RUN_DIR_HELP)
    align.set_defaults(func=cmd_align)

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
    audit.set_defaults(func=cmd_audit)

    sync = sub.add_parser("sync", help="upload a run directory kept during a tracking outage to MLflow")
    sync.add_argument("run_dir", help="the run directory the audit named")
    sync.add_argument("--uri", help="tracking URI (default: the one the audit was configured with)")
    sync.add_argument("--retry-seconds", type=_positive_seconds, default=20.0,
                      help="give up after about this many seconds of failed attempts (default 20)")
    sync.set_defaults(func=cmd_sync)

    status = sub.add_parser("status", help="versions of a dataset and which one is approved")
    status.add_argument("name", help="dataset name (e.g. digits)")
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 approved / success, 1 rejected, 2 usage or input error,
    3 infrastructure fault)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a one-line usage error (2)
        return int(exc.code or 0)
    if getattr(args, "pretrain", None) == "barlow":
        args.pretrain = "barlow_twins"
    try:
        return int(args.func(args))
    except UsageError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted")


if __name__ == "__main__":
    sys.exit(main())
