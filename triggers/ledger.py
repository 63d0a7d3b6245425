"""RunLedger: every decision to run, recorded under its idempotency key BEFORE the
backend hears of it.

claim -> submit -> mark submitted (or failed). A redelivered event finds its key
claimed and gets the existing run; a crash between claim and submit leaves a
`claimed` entry that recovery submits (the run id derives from the key, so a
submission that did reach the backend is not repeated there either).

Four namespaces in the state store:
- `ledger`: key -> the entry (the authority);
- `open`:   key -> {} while the entry still needs work (submission, monitoring or
  notification), so recovery and the monitor list only live work, not history;
- `runs`:   run id -> key, to answer GET /api/runs/{id} for runs not yet submitted;
- `index/ended`: one document listing the newest runs that ended without the
  backend ever running them (canceled while queued, refused at submission), so GET
  /api/runs still lists them once their entry is closed (one read, not one a run).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from triggers.state import StateStore

ORPHAN_INDEX_S = 300.0
ENDED_KEPT = 200  # how many runs that ended in the ledger alone stay listed
EntryStatus = Literal["claimed", "waiting", "submitted", "failed", "canceled"]


@dataclass(frozen=True, kw_only=True)
class LedgerEntry:
    key: str
    run_id: str
    trigger: str
    status: EntryStatus
    request: dict[str, Any]
    fingerprint: str
    claimed_at: float
    updated_at: float
    attempts: int = 1
    error: str | None = None
    retryable: bool = False
    run_status: str | None = None  # last status seen by the monitor
    ended_at: float | None = None  # set once, when the run ended without the backend
    notification: dict[str, Any] | None = None
    version: str = field(default="", compare=False)

    @property
    def callback_url(self) -> str | None:
        return self.request.get("callback_url")

    def to_doc(self) -> dict[str, Any]:
        # Shallow: the doc is serialized at once, so asdict's deep copy of the
        # request is wasted work on every ledger write.
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "version"}


class RunLedger:
    def __init__(self, state: StateStore, *, clock=time.time) -> None:
        self.state = state
        self.clock = clock

    def claim(
        self,
        key: str,
        *,
        run_id: str,
        trigger: str,
        request: dict[str, Any],
        fingerprint: str,
    ) -> tuple[LedgerEntry, bool]:
        """(entry, True) when this caller now owns the key; (existing entry, False)
        when the key was claimed before (a repeat or a concurrent delivery)."""
        now = self.clock()
        entry = LedgerEntry(
            key=key,
            run_id=run_id,
            trigger=trigger,
            status="claimed",
            request=request,
            fingerprint=fingerprint,
            claimed_at=now,
            updated_at=now,
        )
        # Index first: an index without an entry is harmless (recovery drops it), an
        # entry without its index would never be recovered or monitored.
        self.state.create("open", key, {"run_id": run_id, "at": now, "status": "claimed"})
        self.state.create("runs", run_id, {"key": key})
        created = self.state.create("ledger", key, entry.to_doc())
        if created is not None:
            return replace(entry, version=created.version), True
        existing = self.get(key)
        if existing is None:  # deleted in between: only `forget` deletes; claim again
            return self.claim(
                key, run_id=run_id, trigger=trigger, request=request, fingerprint=fingerprint
            )
        return existing, False

    def get(self, key: str) -> LedgerEntry | None:
        found = self.state.get("ledger", key)
        return _entry(found.doc, found.version) if found else None

    def by_run_id(self, run_id: str) -> LedgerEntry | None:
        found = self.state.get("runs", run_id)
        return self.get(found.doc["key"]) if found else None

    def update(self, entry: LedgerEntry, **changes: Any) -> LedgerEntry | None:
        """Compare-and-swap: None when someone else changed the entry first."""
        new = replace(entry, updated_at=self.clock(), **changes)
        written = self.state.replace("ledger", entry.key, new.to_doc(), entry.version)
        if written is None:
            return None
        if new.status != entry.status:
            self._mirror_status(new)
        return replace(new, version=written.version)

    def _mirror_status(self, entry: LedgerEntry) -> None:
        """Copy the status into the open index, so counting active runs need not
        read every waiting entry. A hint only: a stale one costs a read."""
        for _ in range(3):
            index = self.state.get("open", entry.key)
            if index is None or index.doc.get("status") == entry.status:
                return
            doc = {**index.doc, "status": entry.status}
            if self.state.replace("open", entry.key, doc, index.version) is not None:
                return

    def end(self, entry: LedgerEntry, status: EntryStatus, **changes: Any) -> LedgerEntry | None:
        """The run ended before the backend ran it: record when (once), and keep it
        listed among the ended runs. None when someone changed the entry first."""
        ended = self.update(entry, status=status, ended_at=entry.ended_at or self.clock(),
                            **changes)  # fmt: skip
        if ended is not None:
            self.state.swap("index", "ended", lambda doc: (_listed(doc, entry.key), None))
        return ended

    def ended_entries(self, limit: int) -> list[LedgerEntry]:
        """The newest runs that ended in the ledger alone, newest first."""
        found = self.state.get("index", "ended")
        keys = found.doc["keys"][:limit] if found else []
        return [e for key in keys if (e := self.get(key)) is not None]

    def close(self, key: str) -> None:
        """The entry needs no more work: drop it from the open index (kept in history)."""
        self.state.delete("open", key)

    def is_open(self, key: str) -> bool:
        return self.state.get("open", key) is not None

    def reopen(self, entry: LedgerEntry) -> None:
        """Put a closed entry back in the open index before working on it again."""
        self.state.create(
            "open", entry.key, {"run_id": entry.run_id, "at": self.clock(), "status": entry.status}
        )

    def forget(self, entry: LedgerEntry) -> bool:
        """Undo a claim that decided not to run (e.g. CONCURRENCY_POLICY=skip)."""
        if not self.state.delete("ledger", entry.key, entry.version):
            return False
        self.state.delete("runs", entry.run_id)
        self.state.delete("open", entry.key)
        return True

    def open_entries(self, *, skip_status: frozenset[str] = frozenset()) -> list[LedgerEntry]:
        """Entries that still need work. `skip_status` leaves out entries whose
        index says they are in one of those states without reading them."""
        entries = []
        for key, index in list(self.state.items("open")):
            if index.doc.get("status") in skip_status:
                continue
            entry = self.get(key)
            if entry is None:
                # Index written and the entry not (yet): a claim in progress, or one
                # that crashed inside `claim` (nothing was decided); drop it when old.
                if self.clock() - index.doc.get("at", 0) > ORPHAN_INDEX_S:
                    self.state.delete("open", key, index.version)
                continue
            entries.append(entry)
        return entries


def _listed(doc: dict[str, Any] | None, key: str) -> dict[str, Any]:
    keys = [k for k in (doc or {}).get("keys", []) if k != key]
    return {"keys": [key, *keys][:ENDED_KEPT]}


def _entry(doc: dict[str, Any], version: str) -> LedgerEntry:
    return LedgerEntry(**doc, version=version)
