"""Admission: a request becomes a claimed ledger entry, then the concurrency policy
decides whether it starts now, waits in the queue, or is skipped."""

from __future__ import annotations

import threading
from collections.abc import Callable

from pipeline.runs import RunRecord
from pipeline.submitter import RunNotFound, Submitter
from pipeline.verification import AnyRequest
from triggers import policies, telemetry
from triggers.ledger import LedgerEntry, RunLedger
from triggers.outcomes import Accepted, IdempotencyConflict, Outcome, Skipped
from triggers.submission import Submission

# Ledger states that never count against MAX_CONCURRENT_RUNS.
_NOT_ACTIVE = frozenset({"waiting", "failed", "canceled"})


class Admission:
    def __init__(
        self,
        settings,
        ledger: RunLedger,
        submitter: Submitter,
        submission: Submission,
        record: Callable[[LedgerEntry], RunRecord],
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.submitter = submitter
        self.submission = submission
        self.record = record
        # One admission at a time per process: threads of the HTTP server then wait
        # on a lock instead of in SQLite's busy handler (which sleeps up to 100 ms a
        # turn), and the concurrency limit is read and acted on without a race
        # between this process's own threads. Instances scaled out still rely on
        # the ledger's conditional writes.
        self._lock = threading.Lock()

    def admit(self, request: AnyRequest, *, run_id: str, trigger: str, key: str) -> Outcome:
        with self._lock:
            return self._admit(request, run_id, trigger, key)

    def _admit(self, request: AnyRequest, run_id: str, trigger: str, key: str) -> Outcome:
        canonical = request.model_dump(mode="json")
        with telemetry.span("ledger claim") as claim:
            entry, created = self.ledger.claim(
                key,
                run_id=run_id,
                trigger=trigger,
                request=canonical,
                fingerprint=policies.request_fingerprint(canonical),
            )
            claim.set_attribute("aml_trigger.created", created)
            claim.set_attribute("aml_trigger.ledger_status", entry.status)
        if not created:
            return self._repeat(entry, canonical)
        decision = policies.admit(
            self._active_runs(exclude=entry.key),
            limit=self.settings.max_concurrent_runs,
            policy=self.settings.concurrency_policy,
        )
        verdict = decision if isinstance(decision, str) else type(decision).__name__.lower()
        telemetry.decision("admit", verdict, getattr(decision, "reason", None))
        if isinstance(decision, policies.Skip):
            self.ledger.forget(entry)
            return Skipped(decision.reason)
        if isinstance(decision, policies.Queue):
            waiting = self.ledger.update(entry, status="waiting") or entry
            return Accepted(self.record(waiting), created=True, note=decision.reason)
        return self.submission.submit(entry)

    def _repeat(self, entry: LedgerEntry, canonical: dict) -> Outcome:
        # A client-chosen key reused for another body is the client's mistake; for
        # keys we derive (blob, timer) the key IS the event, and only details such
        # as the reason text ("past due", "marker") may differ between deliveries.
        reused = entry.fingerprint != policies.request_fingerprint(canonical)
        if reused and entry.key.startswith(("http:", "cli:")):
            raise IdempotencyConflict(entry.key.partition(":")[2])
        if entry.status == "failed":
            self.ledger.reopen(entry)  # a final failure left the open index
            retried = self.ledger.update(entry, status="claimed", attempts=entry.attempts + 1)
            if retried is not None:
                return self.submission.submit(retried)
        return Accepted(self.record(entry), created=False)

    def dispatch_waiting(self) -> list[Outcome]:
        """Submit queued runs (oldest first) while there is room under the limit."""
        waiting = sorted(
            (e for e in self.ledger.open_entries() if e.status == "waiting"),
            key=lambda e: e.claimed_at,
        )
        outcomes: list[Outcome] = []
        with self._lock:
            for entry in waiting:
                if self._active_runs() >= self.settings.max_concurrent_runs:
                    break
                owned = self.ledger.update(entry, status="claimed")
                if owned is not None:
                    outcomes.append(self.submission.submit(owned))
        return outcomes

    def _active_runs(self, exclude: str | None = None) -> int:
        count = 0
        for entry in self.ledger.open_entries(skip_status=_NOT_ACTIVE):
            if entry.key == exclude:
                continue
            if entry.status == "claimed":
                count += 1
            elif entry.status == "submitted" and entry.run_status not in ("completed", "failed",
                                                                          "canceled"):  # fmt: skip
                try:
                    status = self.submitter.get(entry.run_id).status
                except RunNotFound:
                    continue
                if status != entry.run_status:
                    self.ledger.update(entry, run_status=status)
                count += status in ("queued", "running")
        return count
