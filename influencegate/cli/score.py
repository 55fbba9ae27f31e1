"""The core commands, free of MLOps tools (torch, numpy, pandas only): `score` (Influence-SSL scores of an
image dataset version, with its findings) and `score-pairs` (ECIF misalignment scores of image-text pairs).
Their choice lists come from the registries they configure (curvatures, noises, projections, precisions,
SSL methods)."""
from __future__ import annotations

import argparse
import math
from typing import Any

from influencegate import InfluenceConfig
from influencegate.cli.common import (DEVICES, ENCODER_SPECS, UsageError, check_encoder, check_out, describe_incremental,
                                      non_negative, positive, stability_target, write_table)
from influencegate.data import DIGITS_CAPTIONS, DatasetError, load_images, load_pairs
from influencegate.data.constants import CHANNELS
from influencegate.data.folder_walk import describe_skipped
from influencegate.ecif import EcifConfig
from influencegate.influence.config import CURVATURES, ESTIMATORS, NOISES, PRECISIONS, PROJECTIONS
from influencegate.models import load_image_text_encoders
from influencegate.models.heads import METHODS
from influencegate.statistics import known_misalignment, summary_stats
from influencegate.workflows.image_audit import find_issues, load_or_pretrain, score_dataset
from influencegate.workflows.pair_audit import score_pair_dataset

#: What --pretrain accepts: the SSL methods, and "barlow" for barlow_twins.
PRETRAIN_ALIASES = {"barlow": "barlow_twins"}


def scorer_config(args: argparse.Namespace) -> InfluenceConfig:
    """The InfluenceConfig of `score`'s options (those not given take its defaults); UsageError when invalid."""
    values = {k: getattr(args, k) for k in ("rank", "curvature", "draws", "noise", "sigma", "projection", "damping",
                                            "batch_size", "precision", "seed", "device", "target_stability",
                                            "estimator")
              if getattr(args, k) is not None}
    if values.get("target_stability") == "none":
        values["target_stability"] = None
    try:
        return InfluenceConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from exc


def pilot_says(info: dict[str, Any], target: float | None) -> str:
    """' (the draws pilot: ...)' from score_dataset's info and the target stability, '' when no pilot chose the
    draws; says when even all draws stay below the target."""
    expected, q10 = info.get("predicted_stability", math.nan), info.get("predicted_stability_q10", math.nan)
    if target is None or math.isnan(expected) or math.isnan(q10):  # fixed draws
        return ""
    said = f"between-seed Spearman {expected:.3f} expected, {q10:.3f} or more for 9 seed pairs in 10"
    if q10 >= target:
        return f" (chosen by the draws pilot: {said})"
    return f" (all draws; the draws pilot: {said}, below the target {target}; more --draws would raise it)"


def cmd_score(args: argparse.Namespace) -> int:
    """Score DATA and write the scores table (parquet, or csv by extension)."""
    import torch.distributed

    from influencegate.influence.distributed import init_from_env, launched_with_ranks

    config = scorer_config(args)
    check_out(args.out)
    pretrain = PRETRAIN_ALIASES.get(args.pretrain, args.pretrain)
    if args.encoder and pretrain:
        raise UsageError("give either --encoder or --pretrain, not both")
    if launched_with_ranks() and not args.encoder:
        raise UsageError("under torchrun every rank must score the same encoder: pretrain once (score --pretrain "
                         "... --save-encoder CKPT), then launch torchrun with --encoder CKPT")
    distributed = init_from_env(config.device)
    check_encoder(args.encoder)
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
        encoder, _, seconds = load_or_pretrain(dataset, args.encoder, pretrain or "simclr", args.epochs, args.seed or 0,
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
        print(f"incremental: {describe_incremental(resume['incremental'])}")
    if "shards" in resume:
        from influencegate.data.storage import redact

        print(f"{redact(args.resume_dir)}: {resume['shards_reused']} of {resume['shards']} shards reused"
              + (", fit reused" if resume["fit_reused"] else ""))
    texts: dict[str, str] = {}
    findings_error = None
    if not args.no_findings:
        try:
            found = find_issues(dataset, encoder, table, {"groups": groups}, device=config.device,
                                resume_dir=args.resume_dir, since=args.since)
            table, texts = found.table, found.texts
        except ValueError as exc:  # too few samples for a finding, a group column without usable values...
            findings_error = f"findings not run: {exc}; the scores table was written without them (or pass --no-findings)"
    out = args.out
    write_table(table, out)
    stats = summary_stats(table)
    pilot = pilot_says(resume, config.target_stability)
    draws = f"{resume['score_draws']} draws"
    if config.estimator == "ratio" and resume["score_draws"] < config.draws:
        draws += f" and the forward-only objective of all {config.draws} (ratio estimator)"
    print(f"scored {int(stats['n_scored'])} samples with {draws}{pilot} in {seconds:.1f} s -> "
          f"{out} (median log_influence {stats['log_influence_q50']:.3f}, {int(stats['n_high_influence'])} high "
          "influence)")
    for text in texts.values():
        print(text)
    if findings_error:
        raise UsageError(findings_error)
    return 0


def cmd_score_pairs(args: argparse.Namespace) -> int:
    """ECIF scores of the image-text pairs in DATA, written as the pair scores table (parquet or csv)."""
    check_out(args.out)
    check_encoder(args.encoder)
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
        audit = score_pair_dataset(dataset, reference, config, image_encoder, text_encoder)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    write_table(audit.table, args.out)
    stats = summary_stats(audit.table, known_misalignment(dataset.records), audit.info["flag_rule"])
    print(f"scored {int(stats['n_scored'])} pairs in {audit.info['seconds']['total']:.1f} s -> {args.out} "
          f"({int(stats['n_misaligned'])} flagged misaligned)")
    if "misalignment_auroc" in stats:
        print(f"known corruption: AUROC {stats['misalignment_auroc']:.3f} (CLIP-score baseline "
              f"{stats['clip_score_auroc']:.3f})")
    return 0


def add_parsers(sub: Any) -> None:
    """The `score` and `score-pairs` subcommands."""
    score = sub.add_parser("score", help="score every sample of a dataset (core only, no MLOps tools)")
    score.add_argument("data", nargs="?", default="digits", help="'digits', a folder of images, a manifest, or "
                       "WebDataset/Parquet shards (a file, a folder or a pattern such as 'shards/{000000..000099}.tar'); "
                       "local or s3://, gs://, memory:// URLs")
    score.add_argument("--out", default="scores.parquet", help="output table (.parquet or .csv)")
    score.add_argument("--encoder", help=f"encoder: {ENCODER_SPECS}")
    score.add_argument("--pretrain", choices=[*METHODS, *PRETRAIN_ALIASES], help="pretrain an encoder first")
    score.add_argument("--epochs", type=positive, default=20)
    score.add_argument("--save-encoder", help="write the pretrained encoder here")
    score.add_argument("--image-size", type=int)
    score.add_argument("--workers", type=non_negative, default=0, help="DataLoader processes that read and decode")
    score.add_argument("--channels", type=int, choices=CHANNELS)
    score.add_argument("--device", choices=DEVICES)
    score.add_argument("--rank", type=positive)
    score.add_argument("--curvature", choices=CURVATURES)
    score.add_argument("--draws", type=positive, help="perturbation draws per image (the most a score uses)")
    score.add_argument("--target-stability", type=stability_target,
                       help="fewest draws at which 9 in 10 pairs of seeds simulated by the draws pilot reach this "
                            "between-seed Spearman (default 0.95; 'none': always --draws)")
    score.add_argument("--estimator", choices=ESTIMATORS,
                       help="'ratio' (opt-in): the scored draws' mean corrected by every draw's forward-only "
                            "objective, so that the draws pilot can keep fewer scored draws (README, issue 15)")
    score.add_argument("--noise", choices=NOISES)
    score.add_argument("--sigma", type=float)
    score.add_argument("--projection", choices=PROJECTIONS)
    score.add_argument("--damping", type=float)
    score.add_argument("--batch-size", type=positive)
    score.add_argument("--precision", choices=PRECISIONS)
    score.add_argument("--seed", type=int)
    score.add_argument("--resume-dir", help="keep the fit and the scores shard by shard here (a local directory or "
                                            "a URL: s3://bucket/runs/x, gs://..., memory://...); run the same command "
                                            "again to resume an interrupted run (same config, encoder and data)")
    score.add_argument("--shard-size", type=positive, default=4096, help="samples per shard with --resume-dir")
    score.add_argument("--since", metavar="DIR",
                       help="the --resume-dir of an earlier version scored with the same --encoder and settings: this "
                            "version appends samples to it, so only the new ones are scored and encoded (the old "
                            "scores are kept while a re-check of 200 of them holds Spearman >= 0.99) and the findings "
                            "check only what they change; with --resume-dir, this version is kept there as the base "
                            "of the next")
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
    pairs.add_argument("--workers", type=non_negative, default=0, help="DataLoader processes that read and decode")
    pairs.add_argument("--channels", type=int, choices=CHANNELS)
    pairs.add_argument("--device", choices=DEVICES)
    pairs.add_argument("--seed", type=int)
    pairs.set_defaults(func=cmd_score_pairs)
