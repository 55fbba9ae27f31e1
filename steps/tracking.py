"""Log the audit to MLflow: the active run of the stack's MLflow tracker, else the configured tracking URI."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
from PIL import Image
from zenml import step
from zenml.types import HTMLString

from influencegate.integrations.mlflow import log_audit


@step(enable_cache=False)
def log_to_mlflow(dataset: dict, records: pd.DataFrame, scores: pd.DataFrame, summary: dict, scoring_info: dict,
                  encoder_info: dict, decision: dict, data_docs: Path, histogram: Image.Image,
                  most_influential: Image.Image, least_influential: Image.Image,
                  evidently_report: Optional[HTMLString] = None, drift: Optional[dict] = None,
                  fairness: Optional[pd.DataFrame] = None, duplicate_groups: Optional[pd.DataFrame] = None,
                  duplicate_gallery: Optional[Image.Image] = None, outlier_gallery: Optional[Image.Image] = None,
                  group_histograms: Optional[Image.Image] = None, embedding_map: Optional[Image.Image] = None,
                  findings_report: Optional[HTMLString] = None, tracking_uri: Optional[str] = None,
                  experiment: Optional[str] = None) -> Annotated[dict, "mlflow_run"]:
    """One MLflow run with everything the audit produced (see `influencegate.integrations.mlflow.log_audit`).

    No tracker is hard-coded: run this step `.with_options(experiment_tracker="<your mlflow tracker>")` and it
    logs into the tracker's run; otherwise to `tracking_uri` (default MLFLOW_TRACKING_URI or sqlite:///mlflow.db).
    Returns {"run_id", "experiment_id", "tracking_uri", "artifact_uri"}.
    """
    timings = {"seconds.score": scoring_info.get("seconds"), "seconds.pretrain": encoder_info.get("pretrain_seconds")}
    return log_audit(scores=scores, summary={**summary, **timings}, decision={**decision, "data_docs": str(data_docs)},
                     dataset=dataset, records=records, scorer_params=scoring_info.get("config", {}), encoder=encoder_info,
                     figures={"histogram": histogram, "most": most_influential, "least": least_influential,
                              "duplicate_gallery": duplicate_gallery, "outlier_gallery": outlier_gallery,
                              "group_histograms": group_histograms, "embedding_map": embedding_map},
                     tables={"fairness": fairness, "duplicate_groups": duplicate_groups},
                     html={"findings_report": str(findings_report) if findings_report else None,
                           "evidently": str(evidently_report) if evidently_report else None}, drift=drift,
                     uri=tracking_uri, experiment=experiment)
