"""When the running ZenML pipeline run began: the start an audit's MLflow run carries."""
from __future__ import annotations

from datetime import timezone

from zenml import get_step_context


def pipeline_started_at() -> float | None:
    """Seconds since the epoch at which the pipeline run of the step being executed started (ZenML keeps UTC
    times without a zone); None when no step is running (a step function called directly) or ZenML has not
    recorded the start."""
    try:
        start = get_step_context().pipeline_run.start_time
    except RuntimeError:  # ZenML: "The step context is only available inside a step function."
        return None
    if start is None:
        return None
    return (start if start.tzinfo else start.replace(tzinfo=timezone.utc)).timestamp()
