"""The `influencegate` command, one module per command group.

    influencegate score DATA --out scores.parquet [--encoder CKPT | --pretrain simclr --epochs N] [scorer options]
                        [--groups COL,COL] [--no-findings] [--resume-dir DIR [--shard-size N]]
    torchrun --nproc_per_node=G -m influencegate.cli score DATA --encoder CKPT ...   the same over G processes
    influencegate score-pairs DATA --out pairs.parquet [--reference CLEAN_DATA]   ECIF scores of image-text pairs
    influencegate demo                               the embedded default (digits) end to end through ZenML
    influencegate audit [CONFIG.yaml] [--set k=v ...] [--run-dir DIR]   exit 0 approved, 1 rejected by the data,
                                                     2 usage or input error, 3 infrastructure fault (tracking, disk)
    influencegate audit-pairs [CONFIG.yaml] [--set k=v ...] [--run-dir DIR]   the pair audit through ZenML (alias:
                                                     align); the same exit codes
    influencegate sync RUN_DIR [--uri URI]           upload a run directory an outage kept to MLflow (exit 0 or 3)
    influencegate status NAME                        versions of a dataset and which one is approved

- `score`: `score` and `score-pairs`, pure core (torch/numpy/pandas);
- `pipelines`: `demo`, `audit`, `audit-pairs` (ZenML, MLflow, Great Expectations and Evidently imported there only);
- `tracking`: `sync`, `status`; `common`: exit codes, the one-line usage error, argparse types.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from influencegate.cli import pipelines, score, tracking
from influencegate.cli.common import Parser, UsageError, fail


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand (each group adds its own)."""
    parser = Parser(prog="influencegate", description="Label-free influence auditing of pretraining datasets.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in (score, pipelines, tracking):
        group.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 approved / success, 1 rejected, 2 usage or input error,
    3 infrastructure fault)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a one-line usage error (2)
        return int(exc.code or 0)
    try:
        return int(args.func(args))
    except UsageError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return fail("interrupted")
