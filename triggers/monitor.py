"""The run monitor: follows unfinished runs, notifies originators once, frees slots.

One tick: poll every submitted, unfinished run in the ledger's open index
(`submitter.get`); on a terminal state deliver the callback (claimed in the ledger
first, so two monitors do not both send it) and close the entry; a run canceled
while queued gets its callback the same way; then resubmit stale claims and start
queued runs that now fit under the concurrency limit (first in, first out).
`run_ended` does the same for one run as soon as its end is known.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pipeline.runs import TERMINAL
from pipeline.submitter import RunNotFound, SubmissionError
from triggers import telemetry
from triggers.ledger import LedgerEntry
from triggers.notify import run_link, run_summary
from triggers.service import CLAIM_GRACE_S, TriggerService

log = logging.getLogger("aml_trigger.monitor")

# A delivery claimed this long ago without a result died with its process: retry.
SENDING_TIMEOUT_S = 600.0


class RunNotRecordedYet(Exception):
    """A run's end arrived while its submission is still being recorded (the ledger
    says `claimed`): nothing can be settled from it yet. Raised so the delivery fails
    and is made again: Event Grid redelivers a failed event with back-off for up to
    24 hours (learn.microsoft.com/azure/event-grid/delivery-and-retry), and the
    local host's Event Grid runner retries the same way. Swallowing it would lose
    the only event of a run that ended fast, and its slot would wait for the
    safety net."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} ended before its submission was recorded; retry")
        self.run_id = run_id


@dataclass
class MonitorReport:
    finished: list[str] = field(default_factory=list)
    notified: list[str] = field(default_factory=list)
    notify_failed: list[str] = field(default_factory=list)
    resubmitted: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)


class RunMonitor:
    def __init__(self, service: TriggerService, *, grace_s: float = CLAIM_GRACE_S) -> None:
        self.service = service
        self.ledger = service.ledger
        self.grace_s = grace_s

    def tick(self) -> MonitorReport:
        report = MonitorReport()
        for entry in self.ledger.open_entries():
            if entry.status == "submitted":
                # Its lines (poll failures, callback results) name the run they are about.
                with telemetry.scoped(
                    run_id=entry.run_id, trigger=entry.trigger, idempotency_key=entry.key
                ):
                    self._follow(entry, report)
            elif entry.status == "canceled":
                self._settle_ended_queued(entry, report)
        for outcome in self.service.recover(grace_s=self.grace_s):
            report.resubmitted.append(outcome.run.run_id)
        try:
            for outcome in self.service.dispatch_waiting():
                report.started.append(outcome.run.run_id)
        except SubmissionError as exc:
            log.warning("starting a queued run failed: %s", exc.message)
        return report

    def run_ended(self, run_id: str) -> MonitorReport:
        """A backend said `run_id` changed state (an Azure ML RunStatusChanged event,
        or the local worker's end-of-run event): follow that one run now, then start
        what fits under the limit. A redelivered or early event is harmless: the run is
        re-read from the backend and the ledger's conditional writes decide."""
        report = MonitorReport()
        entry = self.ledger.by_run_id(run_id)
        if entry is None:
            # Not ours (a pipeline's step job, a run started elsewhere in the
            # experiment): it held no slot, so nothing can start because it ended.
            return report
        if entry.status == "claimed":
            raise RunNotRecordedYet(run_id)
        # An entry whose terminal status is already recorded was settled by an earlier
        # delivery (or the safety-net tick); following it again would report it twice.
        if entry is not None and entry.status == "submitted" and entry.run_status not in TERMINAL:
            with telemetry.scoped(run_id=entry.run_id, trigger=entry.trigger,
                                  idempotency_key=entry.key):  # fmt: skip
                self._follow(entry, report)
        elif entry is not None and entry.status == "canceled" and self.ledger.is_open(entry.key):
            self._settle_ended_queued(entry, report)
        try:
            for outcome in self.service.dispatch_waiting():
                report.started.append(outcome.run.run_id)
        except SubmissionError as exc:
            log.warning("starting a queued run failed: %s", exc.message)
        return report

    def _follow(self, entry: LedgerEntry, report: MonitorReport) -> None:
        try:
            record = self.service.submitter.get(entry.run_id)
        except RunNotFound:
            log.warning("run %s is in the ledger but unknown to the backend", entry.run_id)
            return
        except SubmissionError as exc:
            log.warning("polling run %s failed: %s", entry.run_id, exc.message)
            return
        if record.status not in TERMINAL:
            if record.status != entry.run_status:
                self.ledger.update(entry, run_status=record.status)
            return
        report.finished.append(entry.run_id)
        if entry.callback_url and not self._delivered(entry):
            entry = self._notify(entry, record, report)
            if entry is None:
                return  # another monitor holds the delivery
        updated = self.ledger.update(entry, run_status=record.status)
        if updated is not None:
            self.ledger.close(entry.key)

    def _settle_ended_queued(self, entry: LedgerEntry, report: MonitorReport) -> None:
        """A run canceled while queued ended in the ledger: its originator is told,
        like for any run that ended, then the entry is closed."""
        report.finished.append(entry.run_id)
        if entry.callback_url and not self._delivered(entry):
            record = self.service.reads.from_ledger(entry)
            with telemetry.scoped(run_id=entry.run_id, trigger=entry.trigger,
                                  idempotency_key=entry.key):  # fmt: skip
                entry = self._notify(entry, record, report)
            if entry is None:
                return  # another monitor holds the delivery
        self.ledger.close(entry.key)

    def _delivered(self, entry: LedgerEntry) -> bool:
        note = entry.notification or {}
        if note.get("state") in ("sent", "failed"):
            return True
        sending = note.get("state") == "sending"
        return sending and self.service.clock() - note.get("at", 0) < SENDING_TIMEOUT_S

    def _notify(self, entry: LedgerEntry, record, report: MonitorReport) -> LedgerEntry | None:
        clock = self.service.clock
        claimed = self.ledger.update(entry, notification={"state": "sending", "at": clock()})
        if claimed is None:
            return None
        run_url = run_link(record, self.service.settings.public_base_url)
        delivery = self.service.notifier.send(
            entry.callback_url,
            run_summary(record, run_url=run_url, home=self.service.settings.home),
        )
        (report.notified if delivery.ok else report.notify_failed).append(entry.run_id)
        if not delivery.ok:
            log.warning("callback for run %s failed: %s", entry.run_id, delivery.error)
        done = self.ledger.update(claimed, notification=delivery.as_record(clock()))
        return done or self.ledger.get(entry.key)
