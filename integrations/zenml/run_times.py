"""When the running ZenML pipeline run began: the start an audit's MLflow run carries."""
from __future__ import annotations

from datetime import timezone

from zenml import get_step_context


def pipeline_started_at() -> float | None:
    """Seconds since the epoch at which the pipeline run of the step being executed started (ZenML keeps UTC
    times without a zone); None when ZenML has not recorded it. Call from inside a step only."""
    start = get_step_context().pipeline_run.start_time
    if start is None:
        return None
    return (start if start.tzinfo else start.replace(tzinfo=timezone.utc)).timestamp()
