"""Compare the candidate's score distributions with the last approved version of the same dataset."""
from __future__ import annotations

from typing import Annotated, Optional, Tuple

import pandas as pd
from zenml import step
from zenml.types import HTMLString

from influencegate.integrations.evidently import compare_scores
from influencegate.integrations.zenml.approvals import last_approved
from influencegate.workflows.references import DatasetRef


@step(enable_cache=False)
def compare_with_approved(dataset: DatasetRef, scores: pd.DataFrame, threshold: Optional[float] = None) -> Tuple[
        Annotated[HTMLString, "evidently_report"], Annotated[dict, "drift_summary"]]:
    """Evidently report of `scores` against the scores of the last approved version of `dataset.name`
    (found through the recorded approvals); a "no reference yet" page when none was approved. `threshold`: None
    for each Evidently method's own, else one threshold for every method (see `compare_scores`)."""
    reference = last_approved(dataset.name)
    html, summary = compare_scores(scores, reference["scores"] if reference else None, dataset_name=dataset.name,
                                   reference_version=reference["decision"].get("dataset_version") if reference else None,
                                   current_version=dataset.version, threshold=threshold)
    summary["reference_run_id"] = reference["run_id"] if reference else None
    return HTMLString(html), summary
