"""Reading and steering runs: the backend's record, or the ledger's for runs the
backend has not heard of (queued under the limit, canceled while queued, refused
at submission).

Times are the trigger's: `created_at` is when the request was accepted (the
ledger claim), so a run that waited in the queue keeps it when the backend starts
it; a run that ended in the ledger alone is `finished_at` when it ended.
"""

from __future__ import annotations

from pipeline.runs import RunRecord, rfc3339
from pipeline.submitter import RunNotFound, Submitter
from triggers.ledger import LedgerEntry, RunLedger


class RunReads:
    def __init__(self, submitter: Submitter, ledger: RunLedger) -> None:
        self.submitter = submitter
        self.ledger = ledger

    def get_run(self, run_id: str) -> RunRecord:
        try:
            record = self.submitter.get(run_id)
        except RunNotFound:
            entry = self.ledger.by_run_id(run_id)
            if entry is None:
                raise
            return self.from_ledger(entry)
        return self._accepted_at(record)

    def list_runs(self, limit: int = 20) -> list[RunRecord]:
        runs = {r.run_id: self._accepted_at(r) for r in self.submitter.list_runs(limit)}
        ledger_only = [e for e in self.ledger.open_entries() if e.status != "submitted"]
        for entry in ledger_only + self.ledger.ended_entries(limit):
            if entry.run_id not in runs:
                runs[entry.run_id] = self.from_ledger(entry)
        return sorted(runs.values(), key=lambda r: r.created_at, reverse=True)[:limit]

    def cancel_queued(self, run_id: str) -> LedgerEntry | None:
        """Cancel a run the backend has not started (queued, or failed to submit):
        the run ends here. None when the backend holds it (or someone else changed
        the entry first): cancel it there."""
        entry = self.ledger.by_run_id(run_id)
        if entry is None or entry.status not in ("waiting", "failed"):
            return None
        return self.ledger.end(entry, "canceled")

    def record(self, entry: LedgerEntry) -> RunRecord:
        """The run as the backend knows it once submitted, else as the ledger does."""
        if entry.status == "submitted":
            try:
                return self.submitter.get(entry.run_id).model_copy(
                    update={"created_at": rfc3339(entry.claimed_at)}
                )
            except RunNotFound:
                pass
        return self.from_ledger(entry)

    def from_ledger(self, entry: LedgerEntry) -> RunRecord:
        status = {"failed": "failed", "canceled": "canceled"}.get(entry.status, "queued")
        return RunRecord(
            run_id=entry.run_id,
            status=status,
            backend=self.submitter.backend,
            created_at=rfc3339(entry.claimed_at),
            finished_at=rfc3339(entry.ended_at) if entry.ended_at else None,
            trigger=entry.trigger,
            idempotency_key=entry.key,
            error=entry.error,
            request=entry.request,
            extra={"ledger_status": entry.status},
        )

    def _accepted_at(self, record: RunRecord) -> RunRecord:
        """The backend's record with the time the trigger accepted the request: the
        backend created its run only when the run left the queue."""
        entry = self.ledger.get(record.idempotency_key) if record.idempotency_key else None
        if entry is None or entry.run_id != record.run_id:
            return record
        return record.model_copy(update={"created_at": rfc3339(entry.claimed_at)})
