"""What every command of the CLI shares: exit codes, the one-line usage error, argparse value types, and
writing a scores table."""
from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Callable

import pandas as pd

from influencegate.data import storage
from influencegate.models import encoder_spec_problem

EXIT_APPROVED, EXIT_REJECTED, EXIT_USAGE, EXIT_FAULT = 0, 1, 2, 3
ENCODER_SPECS = ("a checkpoint path or URL (ours, solo-learn, TorchScript), torchvision:<name>, timm:<name>@<checkpoint>, "
                 "open_clip:<model or config.json>@<checkpoint> or torchscript:<path>")
RUN_DIR_HELP = ("write the run (decision, scores, everything logged to MLflow) to this new folder first "
                "(default: a new folder under ./influencegate_runs); `influencegate sync` uploads it after an outage")
#: --device choices of the core commands.
DEVICES = ("cpu", "cuda")


class UsageError(Exception):
    """A user mistake: reported as one line, exit code 2."""


def fail(message: str) -> int:
    """Print `message` as the one-line usage error; returns EXIT_USAGE."""
    print(f"influencegate: error: {message}", file=sys.stderr)
    return EXIT_USAGE


class Parser(argparse.ArgumentParser):
    """argparse with errors as one line and exit 2, no usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"influencegate: error: {message} (see influencegate --help)\n")


def int_at_least(minimum: int) -> Callable[[str], int]:
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


non_negative, positive = int_at_least(0), int_at_least(1)


def stability_target(text: str) -> float | str:
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


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def check_encoder(spec: str | None) -> None:
    """UsageError with the one-line problem of an --encoder spec (a missing file or @checkpoint, an extra that
    is not installed), found before anything is loaded."""
    problem = encoder_spec_problem(spec) if spec else None
    if problem:
        raise UsageError(problem)


def check_out(out: str) -> None:
    """Refuse, before any work is done, an output location that is a folder or whose extension names no
    table format (a usage error: never a silent Parquet file called .txt)."""
    if storage.suffix(out) not in (".parquet", ".csv"):
        raise UsageError(f"--out {storage.redact(out)!r}: the extension names the format; use .parquet or .csv")
    if storage.is_dir(out):
        raise UsageError(f"--out {storage.redact(out)!r} is a folder; give a file name ending in .parquet or .csv")


def write_table(table: pd.DataFrame, out: str) -> None:
    """Write a table as csv (by extension) or parquet to a local path or URL, atomically: an existing file
    is replaced whole or left as it was (see ``storage.write_bytes``)."""
    import io

    buffer = io.BytesIO()
    if storage.suffix(out) == ".csv":
        table.to_csv(buffer, index=False)
    else:
        table.to_parquet(buffer, index=False)
    try:
        storage.write_bytes(out, buffer.getvalue())
    except OSError as exc:
        raise UsageError(f"cannot write --out {storage.redact(out)!r}: {exc}") from exc


def describe_incremental(done: dict[str, Any]) -> str:
    """One line on an incremental audit (`influence.incremental.IncrementalReport` fields and kept_old_scores)."""
    return (f"{done['new']} new samples scored, {done['previous']} previous scores "
            + ("kept" if done["kept_old_scores"] else "scored again")
            + f" (re-check of {done['recheck_samples']}: Spearman {done['recheck_spearman']:.4f}, "
            f"tolerance {done['tolerance']})")
