"""Reading and steering runs: the backend's record, or the ledger's for runs the
backend has not heard of yet (queued under the limit, failed to submit)."""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.runs import RunRecord
from pipeline.submitter import RunNotFound, Submitter
from triggers.ledger import LedgerEntry, RunLedger


class RunReads:
    def __init__(self, submitter: Submitter, ledger: RunLedger) -> None:
        self.submitter = submitter
        self.ledger = ledger

    def get_run(self, run_id: str) -> RunRecord:
        try:
            return self.submitter.get(run_id)
        except RunNotFound:
            entry = self.ledger.by_run_id(run_id)
            if entry is None:
                raise
            return self.from_ledger(entry)

    def list_runs(self, limit: int = 20) -> list[RunRecord]:
        runs = {r.run_id: r for r in self.submitter.list_runs(limit)}
        for entry in self.ledger.open_entries():
            if entry.status != "submitted" and entry.run_id not in runs:
                runs[entry.run_id] = self.from_ledger(entry)
        return sorted(runs.values(), key=lambda r: r.created_at, reverse=True)[:limit]

    def cancel_run(self, run_id: str) -> RunRecord:
        entry = self.ledger.by_run_id(run_id)
        if entry is not None and entry.status in ("waiting", "failed"):
            canceled = self.ledger.update(entry, status="canceled")
            if canceled is not None:
                self.ledger.close(entry.key)
                return self.from_ledger(canceled)
        return self.submitter.cancel(run_id)

    def record(self, entry: LedgerEntry) -> RunRecord:
        """The run as the backend knows it once submitted, else as the ledger does."""
        if entry.status == "submitted":
            try:
                return self.submitter.get(entry.run_id)
            except RunNotFound:
                pass
        return self.from_ledger(entry)

    def from_ledger(self, entry: LedgerEntry) -> RunRecord:
        status = {"failed": "failed", "canceled": "canceled"}.get(entry.status, "queued")
        return RunRecord(
            run_id=entry.run_id,
            status=status,
            backend=self.submitter.backend,
            created_at=datetime.fromtimestamp(entry.claimed_at, UTC).isoformat(),
            trigger=entry.trigger,
            idempotency_key=entry.key,
            error=entry.error,
            request=entry.request,
            extra={"ledger_status": entry.status},
        )
