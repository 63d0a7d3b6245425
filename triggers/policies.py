"""Pure trigger policies: plain values in, a decision out (no I/O, no clock).

Each returns `Submit(...)` or `Skip(reason)`, like Dagster sensors return a
RunRequest or a SkipReason; the service does the I/O the decision implies.

Idempotency keys (what makes a repeat the same run):
- blob, one run per blob: `blob:<container>/<name>@<etag>`;
- blob, one run per drop folder: `blob:<container>/<folder>@<digest>`, where the
  digest covers the names and ETags of every blob in the drop, so the same drop
  redelivered is the same run, and new data in the folder is a new one;
- HTTP: `http:<Idempotency-Key header>`; without the header,
  `http-body:<UTC date>:<sha256 of the canonical request>`: a client retrying the
  same POST on the same day gets the same run (no accidental double training),
  while the same body on another day trains again. Send an Idempotency-Key to
  choose otherwise.
- timer: `timer:<function name>@<scheduled occurrence, ISO UTC>`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from triggers.events import BlobArrival

DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet")
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")
# Folders the pipeline or tools write into the container; never our input.
OWN_OUTPUT_PREFIXES = ("_outputs/", "outputs/", "azureml/", "azure-webjobs-")


@dataclass(frozen=True)
class Submit:
    """A run to request (Dagster's RunRequest): its idempotency key, the data folder
    it trains on and why. `TriggerService.act` turns it into a run."""

    idempotency_key: str
    data: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Skip:
    reason: str


@dataclass(frozen=True)
class Wait(Skip):
    """Not yet: decide again in `delay_s` seconds (a delayed queue message carries
    the question forward, so nothing polls in between)."""

    delay_s: float = 0.0


@dataclass(frozen=True)
class Queue:
    reason: str


Decision = Submit | Skip


# --- idempotency keys -----------------------------------------------------------------
def blob_key(container: str, name: str, etag: str) -> str:
    return f"blob:{container}/{name}@{etag.strip(chr(34))}"


def drop_digest(files: Mapping[str, str]) -> str:
    """Identity of a drop's content: every blob name with its ETag, order-free."""
    text = "\n".join(f"{name}\t{etag}" for name, etag in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def drop_key(container: str, folder: str, files: Mapping[str, str]) -> str:
    return f"blob:{container}/{folder}@{drop_digest(files)}"


def http_key(header: str | None, canonical_request: Mapping[str, Any], today: date) -> str:
    if header is not None:
        return f"http:{header}"
    return f"http-body:{today.isoformat()}:{request_fingerprint(canonical_request)}"


def timer_key(function_name: str, scheduled_at: datetime) -> str:
    return f"timer:{function_name}@{scheduled_at.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def request_fingerprint(canonical_request: Mapping[str, Any]) -> str:
    """Hash of a request as validated (defaults filled in, `dry_run` left out), so
    `{}` and the same body spelled with defaults are the same request."""
    body = {k: v for k, v in canonical_request.items() if k != "dry_run"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def check_idempotency_key(value: str) -> str | None:
    """None when acceptable, else what is wrong (the header is echoed in logs and keys)."""
    if not 1 <= len(value) <= 200:
        return f"Idempotency-Key must be 1-200 characters (got {len(value)})"
    if any(not (32 < ord(c) < 127) for c in value):
        return "Idempotency-Key must be printable ASCII without spaces"
    return None


# --- the schedule -----------------------------------------------------------------------
def scheduled_retrain(
    function_name: str, scheduled_at: datetime, *, past_due: bool, data: str
) -> Submit:
    """The run a timer occurrence asks for: one per occurrence, however often the
    host delivers it."""
    when = scheduled_at.strftime("%Y-%m-%d %H:%M:%SZ")
    late = " (past due: the host was down at that time)" if past_due else ""
    return Submit(
        timer_key(function_name, scheduled_at), data=data, reason=f"scheduled retrain {when}{late}"
    )


# --- blob filters ---------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class BlobRules:
    prefix: str = ""
    marker_name: str = "_SUCCESS"
    max_bytes: int = 5 * 1024**3
    suffixes: tuple[str, ...] = DATA_SUFFIXES


def classify_blob(arrival: BlobArrival, rules: BlobRules) -> Literal["data", "marker"] | Skip:
    """Is this blob data, the drop's marker, or something to ignore (and why)?"""
    name = arrival.name
    if not name.startswith(rules.prefix):
        return Skip(f"{name!r} is outside the watched prefix {rules.prefix!r}")
    if name.startswith(OWN_OUTPUT_PREFIXES):
        return Skip(f"{name!r} is under a folder this service or Azure ML writes")
    parts = name.split("/")
    if any(p.startswith((".", "_")) for p in parts[:-1]):
        return Skip(f"{name!r} is inside a hidden or underscore folder")
    base = parts[-1]
    if base == rules.marker_name:
        return "marker"
    if base.startswith((".", "~", "_")) or base.endswith(TEMP_SUFFIXES):
        return Skip(f"{name!r} is a hidden or temporary file")
    if not base.lower().endswith(rules.suffixes):
        accepted = ", ".join(rules.suffixes)
        return Skip(f"{name!r} is not data ({accepted}) nor the marker {rules.marker_name!r}")
    if arrival.size is not None and arrival.size > rules.max_bytes:
        return Skip(f"{name!r} is {arrival.size} bytes, over BLOB_MAX_BYTES={rules.max_bytes}")
    if arrival.size == 0:
        return Skip(f"{name!r} is empty")
    return "data"


# --- batching a drop folder into one run ----------------------------------------------
@dataclass(frozen=True, kw_only=True)
class CoalescingWindow:
    """A drop is ready when no blob arrived for `quiet_s`, or `max_delay_s` after its
    first blob, whichever comes first: a steady trickle cannot postpone it forever."""

    quiet_s: float = 30.0
    max_delay_s: float = 600.0

    def decide(self, *, first_seen: float, last_seen: float, now: float) -> Submit | Wait:
        """Submit, or Wait with the seconds until the window can next close: never
        later than `max_delay_s` after the first blob."""
        if now - first_seen >= self.max_delay_s:
            return Submit("", reason=f"drop open {now - first_seen:.0f}s (max delay)")
        if now - last_seen >= self.quiet_s:
            return Submit("", reason=f"no new blob for {now - last_seen:.0f}s (quiet window)")
        wait = min(self.quiet_s - (now - last_seen), self.max_delay_s - (now - first_seen))
        return Wait(f"waiting {wait:.0f}s more for the drop to settle", delay_s=wait)


def blob_decision(
    kind: Literal["data", "marker"],
    mode: Literal["window", "marker", "each"],
) -> Literal["run-now", "collect", "run-blob"]:
    """What a classified blob does in a batch mode: start the drop's run now (its
    marker), join the drop (collected until marker or window), or run on its own."""
    if kind == "marker":
        return "run-now"
    if mode == "each":
        return "run-blob"
    return "collect"


# --- concurrency ----------------------------------------------------------------------
@dataclass(frozen=True)
class Start:
    """The run takes a slot under MAX_CONCURRENT_RUNS and is submitted now."""

    reason: str = ""


Admission = Start | Queue | Skip


@dataclass(frozen=True)
class Slots:
    """Who holds the MAX_CONCURRENT_RUNS slots and who waits for one, oldest first,
    by idempotency key: one document in the shared state store, rewritten only by
    compare-and-swap, so every process and instance decides on the same picture."""

    active: tuple[str, ...] = ()
    queue: tuple[str, ...] = ()

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any] | None) -> Slots:
        doc = doc or {}
        return cls(tuple(doc.get("active", ())), tuple(doc.get("queue", ())))

    def to_doc(self) -> dict[str, Any]:
        return {"active": list(self.active), "queue": list(self.queue)}


@dataclass(frozen=True)
class SlotChange:
    """A decision and the slots it leaves. `promoted`: queued keys that took a slot
    freed by an ended run, oldest first; the caller submits them."""

    slots: Slots
    decision: Admission | None = None
    promoted: tuple[str, ...] = ()


def refill(slots: Slots, *, limit: int, ended: frozenset[str] = frozenset()) -> SlotChange:
    """Free the slots of ended runs, and give free slots to the oldest queued keys."""
    active = [k for k in slots.active if k not in ended]
    queue = [k for k in slots.queue if k not in ended]
    free = max(0, limit - len(active))
    promoted = tuple(queue[:free])
    return SlotChange(Slots(tuple(active) + promoted, tuple(queue[free:])), promoted=promoted)


def admit(
    slots: Slots,
    key: str,
    *,
    limit: int,
    policy: Literal["queue", "skip"],
    ended: frozenset[str] = frozenset(),
) -> SlotChange:
    """Start, queue or skip the run `key`. Queued keys go first: a request arriving
    while a slot is free never overtakes runs that were already waiting."""
    change = refill(slots, limit=limit, ended=ended)
    slots = change.slots
    if key in slots.active:  # the same decision replayed (a retried swap)
        return SlotChange(slots, Start("holds a slot"), change.promoted)
    if key in slots.queue:
        return SlotChange(slots, Queue("already queued"), change.promoted)
    if len(slots.active) < limit:
        return SlotChange(Slots(slots.active + (key,), slots.queue), Start(), change.promoted)
    message = f"{len(slots.active)} run(s) active, MAX_CONCURRENT_RUNS={limit}"
    if policy == "queue":
        ahead = len(slots.queue)
        decision = Queue(f"{message}: queued until one finishes ({ahead} ahead)")
        return SlotChange(Slots(slots.active, slots.queue + (key,)), decision, change.promoted)
    return SlotChange(slots, Skip(f"{message} and CONCURRENCY_POLICY=skip"), change.promoted)


def withdraw(slots: Slots, key: str) -> Slots:
    """A canceled or forgotten run leaves the queue (or gives its slot back)."""
    return Slots(
        tuple(k for k in slots.active if k != key), tuple(k for k in slots.queue if k != key)
    )
