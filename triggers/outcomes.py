"""What a trigger event came to: the values every trigger path returns.

Policies (triggers/policies.py) decide with plain values; the service does the
I/O their decisions imply and reports one of these to the caller (the HTTP API
turns them into status codes, the host into log lines).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.runs import RunRecord
from triggers.validation import RequestError


@dataclass(frozen=True)
class Accepted:
    """A run exists for the request: `created` is False for a repeat."""

    run: RunRecord
    created: bool
    note: str = ""


@dataclass(frozen=True)
class Skipped:
    reason: str


@dataclass(frozen=True)
class Deferred:
    """Recorded, not yet a run (a blob joined a drop that is still filling)."""

    reason: str


@dataclass(frozen=True)
class DryRun:
    run_id: str
    description: dict[str, Any]  # the submitter's describe(): for the operator's eyes
    request: dict[str, Any] = field(default_factory=dict)  # as validated, defaults filled


Outcome = Accepted | Skipped | Deferred | DryRun


class IdempotencyConflict(RequestError):
    def __init__(self, key: str) -> None:
        super().__init__(
            422,
            "idempotency_key_reused",
            f"Idempotency-Key {key!r} was already used with a different request body; "
            "send the same body to get that run, or a new key for a new run",
            [{"path": "Idempotency-Key", "value": key, "message": "reused with another body"}],
        )
