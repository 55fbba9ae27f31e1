"""The commands that read the tracking and the approvals: `sync` (upload a run directory an outage kept) and
`status` (the versions of a dataset and which one is approved)."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from influencegate.cli.common import EXIT_APPROVED, EXIT_FAULT, EXIT_REJECTED, UsageError, positive_seconds
from influencegate.cli.pipelines import mlops_env, quiet_logs


def cmd_sync(args: argparse.Namespace) -> int:
    """Upload a run directory (kept by an audit whose tracking upload failed) to MLflow; exit 0, or 3 when the
    tracking store is still unreachable."""
    mlops_env()
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
    quiet_logs()
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
    mlops_env()
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


def add_parsers(sub: Any) -> None:
    """The `sync` and `status` subcommands."""
    sync = sub.add_parser("sync", help="upload a run directory kept during a tracking outage to MLflow")
    sync.add_argument("run_dir", help="the run directory the audit named")
    sync.add_argument("--uri", help="tracking URI (default: the one the audit was configured with)")
    sync.add_argument("--retry-seconds", type=positive_seconds, default=20.0,
                      help="give up after about this many seconds of failed attempts (default 20)")
    sync.set_defaults(func=cmd_sync)

    status = sub.add_parser("status", help="versions of a dataset and which one is approved")
    status.add_argument("name", help="dataset name (e.g. digits)")
    status.set_defaults(func=cmd_status)
