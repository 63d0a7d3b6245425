"""Handing a claimed ledger entry to the backend, and taking over claims that never
reached it (a crash between claim and submit)."""

from __future__ import annotations

import logging

from pipeline.submitter import SubmissionError, Submitter
from pipeline.verification import stored_request
from triggers import telemetry
from triggers.ledger import LedgerEntry, RunLedger
from triggers.outcomes import Accepted, Outcome

log = logging.getLogger("aml_trigger.service")

# A claim younger than this may still be on its way to the backend in another
# process; recovery leaves it alone. At host start nothing else is submitting.
CLAIM_GRACE_S = 120.0


class Submission:
    def __init__(self, submitter: Submitter, ledger: RunLedger, *, clock) -> None:
        self.submitter = submitter
        self.ledger = ledger
        self.clock = clock

    def submit(self, entry: LedgerEntry) -> Accepted:
        """Submit an entry this caller owns (status `claimed`) and record the result."""
        request = stored_request(entry.request)
        try:
            with telemetry.submitting(entry, backend=self.submitter.backend) as span:
                record = self.submitter.submit(
                    request, run_id=entry.run_id, trigger=entry.trigger, idempotency_key=entry.key
                )
                span.set_attribute("aml_trigger.run_status", record.status)
                log.info("run %s submitted (%s backend, %s)", record.run_id,
                         self.submitter.backend, record.status)  # fmt: skip
        except SubmissionError as exc:
            if exc.retryable:
                self.ledger.update(entry, status="failed", error=exc.message, retryable=True)
            else:  # final: the run ended here, and is listed as such
                self.ledger.end(entry, "failed", error=exc.message, retryable=False)
                self.ledger.close(entry.key)
            raise
        self.ledger.update(entry, status="submitted", run_status=record.status, error=None)
        return Accepted(record, created=True)

    def recover(self, *, grace_s: float = CLAIM_GRACE_S) -> list[Outcome]:
        """Submit claims that never reached the backend and retryable failures. Each
        is taken over by compare-and-swap, so two recovering instances do not both
        submit it."""
        now = self.clock()
        outcomes: list[Outcome] = []
        for entry in self.ledger.open_entries():
            stale = now - entry.updated_at >= grace_s
            if entry.status == "claimed" and stale or entry.status == "failed" and entry.retryable:
                owned = self.ledger.update(entry, status="claimed", attempts=entry.attempts + 1)
                if owned is None:
                    continue
                try:
                    outcomes.append(self.submit(owned))
                except SubmissionError as exc:
                    log.warning("resubmitting %s failed: %s", entry.run_id, exc.message)
        return outcomes
