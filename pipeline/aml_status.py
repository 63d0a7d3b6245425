"""Azure ML job states onto run states: pure functions, no SDK import.

A state is terminal only when Azure ML says the job is over. CancelRequested is
still running (a cancel can arrive too late and the job may still complete), and
states we do not know are treated as not finished, so callers keep polling rather
than report an outcome that has not happened.
"""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.runs import RunStatus

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
