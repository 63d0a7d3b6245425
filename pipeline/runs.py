"""What a run looks like to users, whatever executed it (local or Azure ML)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

RunStatus = Literal["queued", "running", "completed", "failed", "canceled"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "canceled"})
StepStatus = Literal["pending", "running", "completed", "failed", "skipped", "canceled"]


def rfc3339(value: datetime | float | str) -> str:
    """The one timestamp format of the API and the callbacks: RFC 3339, UTC, in
    milliseconds, e.g. `2026-12-06T14:03:12.123Z`. Takes a datetime (naive = UTC),
    epoch seconds or an ISO 8601 string (as Azure ML and the run store give them)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    elif not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _timestamp(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return rfc3339(value)
    except ValueError:
        return value  # not a time we can read: shown as the backend gave it


class StepRecord(BaseModel):
    name: str
    status: StepStatus = "pending"
    started_at: str | None = Field(None, description="RFC 3339, UTC, milliseconds.")
    finished_at: str | None = None
    duration_s: float | None = None
    error: str | None = Field(None, description="The step's own error message when it failed.")
    log_path: str | None = None
    peak_rss_mb: float | None = None

    _times = field_validator("started_at", "finished_at")(_timestamp)


class RunRecord(BaseModel):
    run_id: str
    status: RunStatus
    backend: Literal["local", "aml"] = "local"
    created_at: str = Field(
        description="When the request was accepted (RFC 3339 UTC, milliseconds); set once: "
        "a run that waited in the queue keeps it when it starts."
    )
    started_at: str | None = None
    finished_at: str | None = None
    trigger: str = Field("manual", description="http, timer, blob, cli or schedule.")
    idempotency_key: str | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict, description="Test-split metrics.")
    gate: dict[str, Any] | None = Field(None, description="ChampionGate decision and reasons.")
    model_version: str | None = None
    endpoint: str | None = Field(None, description="Scoring URI of the serving endpoint.")
    error: str | None = None
    request: dict[str, Any] | None = None
    extra: dict[str, Any] = Field(default_factory=dict, description="Backend-specific details.")

    _times = field_validator("created_at", "started_at", "finished_at")(_timestamp)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


RUN_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{2,63}$"


def run_id_for(idempotency_key: str) -> str:
    """The run id derived from an idempotency key. Deterministic, so a redelivered
    event or a retried submission names the same run (and, on Azure ML, the same
    job), which the backend then refuses to start twice."""
    import hashlib

    return "run-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]


def new_run_id() -> str:
    """A fresh run id for a run that has no idempotency key (a manual CLI run)."""
    import secrets
    from datetime import UTC, datetime

    return "run-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
