"""Azure ML job states onto run and step states: pure functions, no SDK import.

A state is terminal only when Azure ML says the job is over. CancelRequested is
still running (a cancel can arrive too late and the job may still complete), and
states we do not know are treated as not finished, so callers keep polling rather
than report an outcome that has not happened.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from pipeline.runs import RunStatus, StepRecord, StepStatus

AML_STATUS: dict[str, RunStatus] = {
    "NotStarted": "queued",
    "Queued": "queued",
    "Preparing": "queued",
    "Provisioning": "queued",
    "Starting": "queued",
    "Running": "running",
    "Finalizing": "running",
    "CancelRequested": "running",
    "NotResponding": "running",
    "Paused": "running",
    "Unknown": "running",
    "Completed": "completed",
    "Failed": "failed",
    "Canceled": "canceled",
}


def run_status(aml_status: object) -> RunStatus:
    """The run state for an Azure ML job state (a str or the SDK's str-based enum)."""
    value = getattr(aml_status, "value", aml_status)
    return AML_STATUS.get(str(value), "running") if value is not None else "queued"


def group_status(statuses: Iterable[RunStatus]) -> RunStatus:
    """One state for the jobs of a comparison group: unfinished while any job is
    unfinished; then failed if any failed, canceled if any was canceled, else completed."""
    seen = list(statuses)
    if not seen:
        return "queued"
    if "running" in seen:
        return "running"
    if "queued" in seen:
        return "running" if any(s != "queued" for s in seen) else "queued"
    if "failed" in seen:
        return "failed"
    if "canceled" in seen:
        return "canceled"
    return "completed"


# A pipeline's nodes are child runs; their states are the job states above, plus the
# run history's own words for nodes that never ran.
_STEP_STATUS: dict[str, StepStatus] = {
    "NotStarted": "pending",
    "Queued": "pending",
    "Preparing": "pending",
    "Provisioning": "pending",
    "Starting": "running",
    "Running": "running",
    "Finalizing": "running",
    "CancelRequested": "running",
    "NotResponding": "running",
    "Paused": "running",
    "Completed": "completed",
    "Failed": "failed",
    "Canceled": "canceled",
    "Skipped": "skipped",
}


def step_status(aml_status: object) -> StepStatus:
    """The step state for a child job's state; unknown states read as running."""
    value = getattr(aml_status, "value", aml_status)
    return _STEP_STATUS.get(str(value), "running") if value is not None else "pending"


def step_record(
    name: str,
    aml_status: object,
    started: datetime | None,
    finished: datetime | None,
    error: str | None = None,
) -> StepRecord:
    """One step of an Azure ML run, shaped like a local step (duration in seconds)."""
    status = step_status(aml_status)
    duration = (finished - started).total_seconds() if started and finished else None
    return StepRecord(
        name=name,
        status=status,
        started_at=_iso(started),
        finished_at=_iso(finished) if status in {"completed", "failed", "canceled"} else None,
        duration_s=round(duration, 3) if duration is not None else None,
        error=error if status == "failed" else None,
    )


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()
