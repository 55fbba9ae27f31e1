"""Why a pipeline run failed, read back from the ZenML store, and quiet step failures that are already explained.

An orchestrator reports a failed step as its own error ("Pipeline run has failed due to failure in step(s): ...");
the step's exception is kept in the ZenML store (the step run's `exception_info`: class and message), whatever the
orchestrator. `failed_step` finds it for the run that wrote a given run directory, so the CLI can tell a user's
input error (a ValueError raised by a step: no readable image, duplicate sample ids...) from a fault.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, Optional

#: ZenML loggers that log a failed step with its traceback (`logger.exception`).
STEP_FAILURE_LOGGERS = ("zenml.orchestrators.local.local_orchestrator", "zenml.orchestrators.step_launcher",
                        "zenml.orchestrators.dag_runner")


@dataclass(frozen=True)
class StepFailure:
    """The first failed step of a run: its name, its exception's class (RuntimeError when it cannot be imported here, None when unknown)
    and message."""

    step: str
    kind: Optional[type[BaseException]]
    message: str

    def line(self) -> str:
        """The failure as one line: `step: first line of the message`."""
        first = (self.message.strip().splitlines() or [getattr(self.kind, "__name__", "error")])[0]
        return f"{self.step}: {first[:500]}"


def _recent_runs(pipeline_name: str, size: int) -> Iterator[object]:
    from zenml.client import Client

    page = Client().list_pipeline_runs(pipeline_name=pipeline_name, sort_by="desc:created", size=size, hydrate=True)
    yield from page.items


def failed_step(pipeline_name: str, run_dir: str, search: int = 20) -> StepFailure | None:
    """The failed step of the latest run of `pipeline_name` whose `tracking.run_dir` parameter is `run_dir`
    (unique per audit, so concurrent audits do not mix up), among its `search` newest runs; None when there is
    no such run or no step of it failed with a recorded exception."""
    from zenml.utils.exception_utils import reconstruct_exception

    for run in _recent_runs(pipeline_name, search):
        tracking = (run.config.parameters or {}).get("tracking") or {}
        if tracking.get("run_dir") != run_dir:
            continue
        for name, step in run.steps.items():
            info = step.exception_info
            if step.status.value == "failed" and info is not None:
                # a class that cannot be imported here comes back as a RuntimeError: not taken for an input error
                kind = type(reconstruct_exception(info, info.message or "")) if info.source else None
                return StepFailure(name, kind, info.message or "")
        return None
    return None


class _DropTraceback(logging.Filter):
    """Keeps the record, without its traceback, when the logged exception is one of `kinds`."""

    def __init__(self, kinds: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.kinds = kinds

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, self.kinds):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_step_tracebacks(kinds: tuple[type[BaseException], ...]) -> None:
    """Log a step that failed with one of `kinds` (errors the caller reports in one line: input errors, a tracking
    outage) as ZenML's one-line "Step X failed." without the traceback; other failures keep theirs."""
    for name in STEP_FAILURE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTraceback) for f in logger.filters):
            logger.addFilter(_DropTraceback(kinds))
