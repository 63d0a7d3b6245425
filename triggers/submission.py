"""Handing a claimed ledger entry to the backend, and recording what it said."""

from __future__ import annotations

import logging

from pipeline.submitter import SubmissionError, Submitter
from pipeline.verification import stored_request
from triggers import telemetry
from triggers.ledger import LedgerEntry, RunLedger
from triggers.outcomes import Accepted

log = logging.getLogger("aml_trigger.service")


class Submission:
    def __init__(self, submitter: Submitter, ledger: RunLedger) -> None:
        self.submitter = submitter
        self.ledger = ledger

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
