"""The seam between the trigger service and whatever runs the pipeline.

`LocalSubmitter` (embedded default) and `AmlSubmitter` (azure-ai-ml) implement it;
tests pass fakes here rather than patching internals (the httpx transport idea).
"""

from __future__ import annotations

from typing import Protocol

from pipeline.request import TrainingRequest
from pipeline.runs import RunRecord


class SubmissionError(Exception):
    """The backend refused or failed a submission. `code` is machine readable
    (e.g. `unauthorized`, `not_found`, `unavailable`); the message says what to do."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class RunNotFound(KeyError):
    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id

    def __str__(self) -> str:
        return f"no run named {self.run_id!r}"


class Submitter(Protocol):
    backend: str

    def submit(
        self,
        request: TrainingRequest,
        *,
        run_id: str,
        trigger: str,
        idempotency_key: str | None = None,
    ) -> RunRecord:
        """Start a run named `run_id`. Submitting an existing `run_id` again returns
        that run rather than starting a second one."""
        ...

    def get(self, run_id: str) -> RunRecord:
        """The run's current state; raises RunNotFound."""
        ...

    def list_runs(self, limit: int = 20) -> list[RunRecord]:
        """Recent runs, newest first."""
        ...

    def cancel(self, run_id: str) -> RunRecord:
        """Ask the run to stop; raises RunNotFound."""
        ...

    def describe(self, request: TrainingRequest, *, run_id: str, trigger: str) -> dict:
        """What `submit` would send, without sending it (dry run): for Azure ML the
        job YAML under "job_yaml", for the local executor the step commands."""
        ...
