"""A pipeline job's steps, read from its child jobs (one per node).

Azure ML serves a pipeline's child jobs from the run history service only: ARM's
`jobs/{name}` refuses a child job (azure-ai-ml raises PipelineChildJobError), and
`ml_client.jobs.list(parent_job_name=...)` GETs the parent first, then
`{history}/history/v1.0/.../runs/{name}/children` (observed on the wire, after one
workspace GET and one discovery GET per client). That listing keeps only the SDK's
_BaseJob fields, which drop each run's start and end time, so this module asks the
same children URL through the same run-history client and keeps the Run as
returned: name, status, startTimeUtc, endTimeUtc, error.
"""

from __future__ import annotations

from typing import Any

from pipeline.aml_status import step_record
from pipeline.runs import StepRecord


def child_runs(client: Any, job_name: str) -> list[Any]:
    """The child runs of pipeline job `job_name` as the run history returns them (name,
    status, times, error, tags)."""
    # The same run-history operations `jobs.list(parent_job_name=)` uses (private to
    # the SDK: the public call would add a GET of the parent and lose the times).
    operations = client.jobs._runs_operations._operation
    return list(
        operations.get_child(
            client.subscription_id, client.resource_group_name, client.workspace_name, job_name
        )
    )


class ChildRuns:
    """The child runs of each pipeline job, read at most once: one status read of a
    drift probe needs them for check_drift's decision and again for the steps."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._read: dict[str, list[Any]] = {}

    def __call__(self, job_name: str) -> list[Any]:
        if job_name not in self._read:
            self._read[job_name] = child_runs(self._client, job_name)
        return self._read[job_name]


def child_steps(client: Any, job_name: str, runs: list[Any] | None = None) -> list[StepRecord]:
    """The steps of pipeline job `job_name` (or of its child `runs`, already read), in
    the order they started."""
    if runs is None:
        runs = child_runs(client, job_name)
    steps = [
        step_record(
            node_name(run),
            run.status,
            run.start_time_utc,
            run.end_time_utc,
            _error(run),
        )
        for run in runs
    ]
    return sorted(steps, key=lambda s: (s.started_at is None, s.started_at or "", s.name))


def node_name(run: Any) -> str:
    # A pipeline node's child run is displayed under the node's name (prep, train_1...).
    return run.display_name or run.name or run.run_id


def _error(run: Any) -> str | None:
    error = getattr(getattr(run, "error", None), "error", None)
    message = getattr(error, "message", None)
    return " ".join(str(message).split())[:500] if message else None
