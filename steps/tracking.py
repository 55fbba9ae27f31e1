"""Log the audit to MLflow: the active run of the stack's MLflow tracker, else the configured tracking URI."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
from PIL import Image
from zenml import step
from zenml.types import HTMLString

from influencegate.integrations.mlflow import AuditRun, Tracking, log_audit
from influencegate.integrations.zenml.run_times import pipeline_started_at
from influencegate.report.figures import dataset_images
from influencegate.report.gate_report import with_verdict
from influencegate.report.review import review_table
from influencegate.workflows.references import DatasetRef

#: encoder_info entries that are measurements (logged as metrics), not settings (params).
ENCODER_MEASUREMENTS = {"pretrain_seconds": "seconds.pretrain", "final_loss": "encoder.final_loss"}


@step(enable_cache=False)
def log_to_mlflow(dataset: DatasetRef, records: pd.DataFrame, scores: pd.DataFrame, summary: dict, scoring_info: dict,
                  encoder_info: dict, decision: dict, data_docs: Path, histogram: Image.Image,
                  most_influential: Image.Image, least_influential: Image.Image,
                  evidently_report: Optional[HTMLString] = None, drift: Optional[dict] = None,
                  findings: Optional[dict] = None, embedding_map: Optional[Image.Image] = None,
                  findings_report: Optional[HTMLString] = None,
                  tracking: Optional[dict] = None) -> Annotated[dict, "mlflow_run"]:
    """One MLflow run with everything the audit produced (see `influencegate.integrations.mlflow.log_audit`);
    findings: {artifact path: image | table | dict} of the findings (`render_findings`' finding_artifacts).

    tracking: the config's tracking section (uri, experiment, run_dir, retry_seconds; `Tracking.of`). The run
    is written to `run_dir` first (default: a new folder under ./influencegate_runs), then uploaded for at most
    about `retry_seconds` (default 20); an unreachable store fails the step with TrackingUnavailable (no
    approval is recorded), and `influencegate sync RUN_DIR` uploads it later.

    No tracker is hard-coded: run this step `.with_options(experiment_tracker="<your mlflow tracker>")` and it
    logs into the tracker's run; otherwise to `tracking["uri"]` (default MLFLOW_TRACKING_URI or sqlite:///mlflow.db).
    Returns {"run_id", "experiment_id", "tracking_uri", "artifact_uri", "runs_url", "ui_command", "run_dir"}.
    """
    measurements = {"seconds.score": scoring_info.get("seconds"), "draws.score": scoring_info.get("draws"),
                    "draws.predicted_stability": scoring_info.get("predicted_stability"),
                    "draws.predicted_stability_q10": scoring_info.get("predicted_stability_q10"),
                    **{name: encoder_info[key] for key, name in ENCODER_MEASUREMENTS.items()
                       if encoder_info.get(key) is not None}}
    settings = {k: v for k, v in encoder_info.items() if k not in ENCODER_MEASUREMENTS}
    findings_page = with_verdict(str(findings_report), decision) if findings_report else None
    run = AuditRun(scores=scores, summary={**summary, **measurements},
                   decision={**decision, "data_docs": str(data_docs)}, dataset=dataset.logged(), records=records,
                   scorer_params=scoring_info.get("config", {}), encoder=settings,
                   figures={"histogram": histogram, "most": most_influential, "least": least_influential,
                            "embedding_map": embedding_map}, findings=findings or {},
                   html={"findings_report": findings_page,
                         "evidently": str(evidently_report) if evidently_report else None}, drift=drift,
                   review=review_table(scores, dataset_images(dataset.open())),
                   incremental=(scoring_info.get("resume") or {}).get("incremental"), started_at=pipeline_started_at())
    return log_audit(run, Tracking.of(tracking))
