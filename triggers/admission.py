"""Admission: a request becomes a claimed ledger entry, then MAX_CONCURRENT_RUNS
decides whether it starts now, waits in the queue, or is skipped.

The limit holds across processes and instances (on Flex Consumption the HTTP,
blob and timer functions run in separate processes, often on separate instances):
who holds a slot and who waits, oldest first, is one document in the shared state
store, changed only by compare-and-swap (`StateStore.swap`), and decided by pure
functions (`policies.admit`, `policies.refill`). This module does the I/O around
them: which slot holders have ended (the ledger, then the backend), and starting
the runs a decision promoted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pipeline.runs import TERMINAL, RunRecord
from pipeline.submitter import RunNotFound, SubmissionError, Submitter
from pipeline.verification import AnyRequest
from triggers import policies, telemetry
from triggers.ledger import LedgerEntry, RunLedger
from triggers.outcomes import Accepted, IdempotencyConflict, Outcome, Skipped
from triggers.submission import Submission

log = logging.getLogger("aml_trigger.service")

# A claim younger than this may still be on its way to the backend in another
# process; recovery leaves it alone. At host start nothing else is submitting.
CLAIM_GRACE_S = 120.0
SLOTS = ("admission", "slots")  # (namespace, key) of the slots document
# Rounds of refill in one dispatch: a promoted run that turns out canceled or
# refused frees its slot again for the next in line.
_DISPATCH_ROUNDS = 8
_VERDICT = {policies.Start: "submit", policies.Queue: "queue", policies.Skip: "skip"}

Decide = Callable[[policies.Slots, frozenset[str]], policies.SlotChange]


class Admission:
    def __init__(
        self,
        settings,
        ledger: RunLedger,
        submitter: Submitter,
        submission: Submission,
        record: Callable[[LedgerEntry], RunRecord],
        *,
        clock,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.state = ledger.state
        self.submitter = submitter
        self.submission = submission
        self.record = record
        self.clock = clock

    @property
    def limit(self) -> int:
        return self.settings.max_concurrent_runs

    # --- a new request ----------------------------------------------------------------
    def admit(self, request: AnyRequest, *, run_id: str, trigger: str, key: str) -> Outcome:
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
        return self._decide(entry)

    def _repeat(self, entry: LedgerEntry, canonical: dict) -> Outcome:
        # A client-chosen key reused for another body is the client's mistake; for
        # keys we derive (blob, timer) the key IS the event, and only details such
        # as the reason text ("past due", "marker") may differ between deliveries.
        reused = entry.fingerprint != policies.request_fingerprint(canonical)
        if reused and entry.key.startswith(("http:", "cli:")):
            raise IdempotencyConflict(entry.key.partition(":")[2])
        if entry.status == "failed" and not entry.retryable:
            # A final failure asked for again: a new attempt, under the limit like any.
            self.ledger.reopen(entry)  # a final failure left the open index
            retried = self.ledger.update(
                entry, status="claimed", attempts=entry.attempts + 1, ended_at=None
            )
            if retried is not None:
                return self._decide(retried)
        return Accepted(self.record(entry), created=False)

    def _decide(self, entry: LedgerEntry) -> Outcome:
        """`entry` is claimed by this caller: start it, queue it, or skip it."""
        change = self._swap(
            lambda slots, ended: policies.admit(
                slots,
                entry.key,
                limit=self.limit,
                policy=self.settings.concurrency_policy,
                ended=ended,
            )
        )
        decision = change.decision
        telemetry.decision("admit", _VERDICT[type(decision)], decision.reason or None)
        # Runs that waited longer took the slots freed meanwhile: start them first.
        self._start(change.promoted)
        if isinstance(decision, policies.Skip):
            if entry.error is not None:  # a retried failure stays the failure it was
                self.ledger.end(entry, "failed")
                self.ledger.close(entry.key)
            else:
                self.ledger.forget(entry)
            return Skipped(decision.reason)
        if isinstance(decision, policies.Queue):
            waiting = self.ledger.update(entry, status="waiting") or entry
            # A dispatcher may have promoted the key between our swap and our update,
            # seen it still `claimed` and left it: start it ourselves if so (the
            # ledger's compare-and-swap lets only one of us).
            if entry.key in self._slots().active:
                self._start((entry.key,))
                waiting = self.ledger.get(entry.key) or waiting
            return Accepted(self.record(waiting), created=True, note=decision.reason)
        try:
            return self.submission.submit(entry)
        except SubmissionError as exc:
            if not exc.retryable:
                self.dispatch_waiting()  # its slot is free again: the next in line starts
            raise

    # --- slots freed ------------------------------------------------------------------
    def dispatch_waiting(self) -> list[Outcome]:
        """Free the slots of ended runs and start queued runs, oldest first, while
        there is room under the limit."""
        outcomes: list[Outcome] = []
        for _ in range(_DISPATCH_ROUNDS):
            stranded: list[str] = []
            change = self._swap(
                lambda slots, ended: policies.refill(slots, limit=self.limit, ended=ended),
                stranded=stranded,
            )
            started, freed = self._start(change.promoted + tuple(stranded))
            outcomes.extend(started)
            if not freed:
                break
        return outcomes

    def recover(self, *, grace_s: float = CLAIM_GRACE_S) -> list[Outcome]:
        """Take over what a process left half done: claims that never reached the
        backend (a crash between claim and submit), retryable failures, and queued
        entries the slots document does not know. Each is taken over by compare-and-
        swap on its ledger entry, so two recovering instances do not both submit it."""
        now = self.clock()
        slots = self._slots()
        outcomes: list[Outcome] = []
        for entry in self.ledger.open_entries():
            stale = now - entry.updated_at >= grace_s
            if entry.status == "waiting" and stale and entry.key not in slots.queue + slots.active:
                outcomes.extend(self._requeue(entry))
                continue
            if not (entry.status == "claimed" and stale or entry.status == "failed"
                    and entry.retryable):  # fmt: skip
                continue
            owned = self.ledger.update(entry, status="claimed", attempts=entry.attempts + 1)
            if owned is None:
                continue
            try:
                if entry.key in slots.active or entry.status == "failed":
                    outcomes.append(self.submission.submit(owned))  # it holds its slot
                else:  # it died before the limit was asked: ask it now
                    outcome = self._decide(owned)
                    if isinstance(outcome, Accepted):
                        outcomes.append(outcome)
            except SubmissionError as exc:
                log.warning("resubmitting %s failed: %s", entry.run_id, exc.message)
        return outcomes

    def _requeue(self, entry: LedgerEntry) -> list[Outcome]:
        # Queued before the slots document existed (or it was lost): back in line.
        change = self._swap(
            lambda slots, ended: policies.admit(
                slots, entry.key, limit=self.limit, policy="queue", ended=ended
            )
        )
        mine = (entry.key,) if isinstance(change.decision, policies.Start) else ()
        return self._start(change.promoted + mine)[0]

    def withdraw(self, key: str) -> None:
        """A queued run was canceled: it leaves the queue."""
        self.state.swap(*SLOTS, lambda doc: _as_change(policies.withdraw(_slots(doc), key)))

    # --- I/O around the pure decisions -------------------------------------------------
    def _slots(self) -> policies.Slots:
        found = self.state.get(*SLOTS)
        return _slots(found.doc if found else None)

    def _swap(self, decide: Decide, *, stranded: list[str] | None = None) -> policies.SlotChange:
        # Which holders have ended is I/O (ledger, backend), so it is read before the
        # swap; only needed when the slots are full. A holder that starts in between
        # just counts as active: the decision can only be too cautious, never over.
        current = self._slots()
        ended: frozenset[str] = frozenset()
        if len(current.active) >= self.limit or stranded is not None:
            ended = self._ended(current.active, stranded)

        def change(doc):
            result = decide(_slots(doc), ended)
            return result.slots.to_doc(), result

        return self.state.swap(*SLOTS, change)

    def _ended(self, holders: tuple[str, ...], stranded: list[str] | None) -> frozenset[str]:
        ended = set()
        for key in holders:
            entry = self.ledger.get(key)
            if entry is not None and entry.status == "waiting" and stranded is not None:
                stranded.append(key)  # promoted by a process that died before starting it
            if not self._holds_slot(entry):
                ended.add(key)
        return frozenset(ended)

    def _holds_slot(self, entry: LedgerEntry | None) -> bool:
        if entry is None or entry.status == "canceled":
            return False
        if entry.status == "failed":
            return entry.retryable  # recovery will submit it again
        if entry.status != "submitted":
            return True  # claimed (being submitted) or promoted (being started)
        if entry.run_status in TERMINAL:
            return False
        try:
            return self.submitter.get(entry.run_id).status not in TERMINAL
        except RunNotFound:
            return False
        except SubmissionError:
            return True  # the backend cannot say now: assume it still runs

    def _start(self, keys: tuple[str, ...]) -> tuple[list[Outcome], bool]:
        """Submit promoted runs; also say whether one of them freed its slot at once
        (canceled meanwhile, or refused by the backend), so the caller refills."""
        outcomes: list[Outcome] = []
        freed = False
        for key in keys:
            entry = self.ledger.get(key)
            if entry is None or entry.status in ("canceled", "failed"):
                freed |= not self._holds_slot(entry)
                continue
            if entry.status != "waiting":
                continue  # claimed or submitted: another process is starting it
            owned = self.ledger.update(entry, status="claimed")
            if owned is None:
                continue  # canceled, or taken by another dispatcher
            try:
                outcomes.append(self.submission.submit(owned))
            except SubmissionError as exc:
                log.warning("starting queued run %s failed: %s", entry.run_id, exc.message)
                freed |= not exc.retryable
        return outcomes, freed


def _slots(doc) -> policies.Slots:
    return policies.Slots.from_doc(doc)


def _as_change(slots: policies.Slots):
    """A swap change that writes `slots` and returns nothing."""
    return slots.to_doc(), None
