"""MLflow: one run per audit (params, metrics, tables, figures, gate decision, reports, dataset input, tags)."""
from influencegate.integrations.mlflow.logging import (ARTIFACTS, DEFAULT_EXPERIMENT, DEFAULT_TRACKING_URI, approval_runs,
                                                       audit_run, log_audit, tracking_uri)

__all__ = ["ARTIFACTS", "DEFAULT_EXPERIMENT", "DEFAULT_TRACKING_URI", "approval_runs", "audit_run", "log_audit",
           "tracking_uri"]
