"""MLflow: one run per audit (params, metrics, tables, figures, gate decision, reports, dataset input, tags),
written to a local run directory first and uploaded with a bounded retry (`influencegate sync` re-uploads)."""
from influencegate.integrations.mlflow.logging import (ARTIFACTS, DEFAULT_EXPERIMENT, DEFAULT_TRACKING_URI, AuditRun,
                                                       Tracking, approval_runs, log_audit, new_run_dir, tracking_uri)
from influencegate.integrations.mlflow.run_dir import RunDirError, read_decision, read_run, read_upload
from influencegate.integrations.mlflow.upload import DEFAULT_RETRY_SECONDS, TrackingUnavailable, upload_run_dir

__all__ = ["ARTIFACTS", "DEFAULT_EXPERIMENT", "DEFAULT_RETRY_SECONDS", "DEFAULT_TRACKING_URI", "AuditRun",
           "RunDirError", "Tracking", "TrackingUnavailable", "approval_runs", "log_audit", "new_run_dir",
           "read_decision", "read_run", "read_upload", "tracking_uri", "upload_run_dir"]
