"""The events the trigger service reacts to, as plain typed values.

function_app.py turns the host's binding objects (HttpRequest, TimerRequest, the
blob trigger's BlobClient) into these, so everything past it is testable without
the host.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, kw_only=True)
class BlobArrival:
    """A blob was created or overwritten in the incoming container. Carries where it
    is and which version (ETag), never its content."""

    container: str
    name: str
    etag: str | None = None
    size: int | None = None
    uri: str | None = None

    @property
    def folder(self) -> str:
        """The drop folder: the blob's parent prefix (`drops/a/part.csv` -> `drops/a/`)."""
        head, sep, _ = self.name.rpartition("/")
        return head + sep

    @property
    def file_name(self) -> str:
        return self.name.rpartition("/")[2]


@dataclass(frozen=True, kw_only=True)
class HttpSubmission:
    """The body of POST /api/runs, still unparsed, and the headers that matter."""

    body: bytes
    idempotency_key: str | None = None
    content_type: str | None = None


@dataclass(frozen=True, kw_only=True)
class TimerTick:
    """A timer fired. `scheduled_at` is the occurrence the tick belongs to (so a
    tick delivered twice, or late, names the same occurrence)."""

    function_name: str
    scheduled_at: datetime
    past_due: bool = False
    schedule_status: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class DropWindowDue:
    """A drop folder's delayed message became visible: is its quiet window closed?"""

    container: str
    folder: str


@dataclass(frozen=True, kw_only=True)
class RunEnded:
    """A backend says a run reached a terminal state (Azure ML's Event Grid event, or
    the local worker's copy of it). Only a hint: the run is re-read from the backend."""

    run_id: str
    status: str
    experiment: str | None = None
