"""TriggerService: validation -> policy -> ledger -> submitter, one typed outcome.

Every trigger (HTTP, timer, blob, CLI) ends in `submit_request`, so dedupe, the
concurrency limit, crash safety and callback checks are the same for all of them.
This module is the facade the functions call; each concern lives in its own:
- triggers/admission.py: ledger claim, the concurrency limit, the queue, recovery;
- triggers/submission.py: handing a claim to the backend;
- triggers/blob_triggers.py: blob events and drop folders;
- triggers/run_reads.py: reading, listing and canceling runs;
- triggers/outcomes.py: what an event came to (Accepted, Skipped, ...).

Policies decide with values (`policies.Submit`, `policies.Skip`, like Dagster's
RunRequest / SkipReason); `act` does the I/O a decision implies. A new trigger kind
is one policy (triggers/policies.py), one decode (triggers/events.py) and one
decorator (function_app.py) whose handler ends in `act` or `submit_request`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from pipeline.request import TrainingRequest
from pipeline.runs import RunRecord, run_id_for
from pipeline.storage import Storage
from pipeline.submitter import Submitter
from pipeline.verification import AnyRequest
from triggers import policies, telemetry
from triggers.admission import CLAIM_GRACE_S, Admission
from triggers.blob_triggers import BlobTriggers
from triggers.drops import DropBook
from triggers.events import BlobArrival, DropWindowDue, HttpSubmission, TimerTick
from triggers.ledger import RunLedger
from triggers.notify import CallbackNotifier, UnsafeCallback
from triggers.outcomes import (
    Accepted,
    Deferred,
    DryRun,
    IdempotencyConflict,
    Outcome,
    Skipped,
)
from triggers.run_reads import RunReads
from triggers.submission import Submission
from triggers.validation import RequestError, parse_training_request, parse_verification_request


def refuse_for_backend(request: Any, backend: str) -> None:
    """422 for what the configured backend cannot run (deploy_target=local on aml),
    before anything is recorded."""
    refusals = getattr(request, "backend_refusals", lambda _: [])(backend)
    if refusals:
        names = ", ".join(r["path"] for r in refusals)
        raise RequestError(
            422, "invalid_request", f"{len(refusals)} invalid field(s): {names}", refusals
        )


__all__ = [
    "CLAIM_GRACE_S",
    "Accepted",
    "Deferred",
    "DryRun",
    "IdempotencyConflict",
    "Outcome",
    "Skipped",
    "TriggerService",
]


class TriggerService:
    def __init__(
        self,
        settings,
        submitter: Submitter,
        ledger: RunLedger,
        drops: DropBook,
        storage: Storage,
        notifier: CallbackNotifier,
        *,
        clock=time.time,
        drop_queue=None,
    ) -> None:
        self.settings = settings
        self.submitter = submitter
        self.ledger = ledger
        self.drops = drops
        self.storage = storage
        self.notifier = notifier
        self.clock = clock
        self.reads = RunReads(submitter, ledger)
        self.submission = Submission(submitter, ledger)
        self.admission = Admission(
            settings, ledger, submitter, self.submission, self.reads.record, clock=clock
        )
        self.blobs = BlobTriggers(
            settings, storage, drops, self.act, clock=clock, drop_queue=drop_queue
        )

    @property
    def drop_queue(self):
        """triggers.queues.DelayedQueue: each drop's quiet window is a delayed message
        on it (None: only the safety net's sweep closes windows)."""
        return self.blobs.drop_queue

    @drop_queue.setter
    def drop_queue(self, queue) -> None:
        self.blobs.drop_queue = queue

    # --- the triggers ---------------------------------------------------------------
    def submit_http(self, submission: HttpSubmission) -> Outcome:
        return self._submit_http(submission, parse_training_request)

    def submit_verification(self, submission: HttpSubmission) -> Outcome:
        """POST /api/verifications: a model trained elsewhere, through the same ledger,
        idempotency, concurrency limit and callback as a training run."""
        return self._submit_http(submission, parse_verification_request)

    def _submit_http(self, submission: HttpSubmission, parse) -> Outcome:
        with telemetry.span("validate"):
            request = parse(submission.body)
            refuse_for_backend(request, self.submitter.backend)
            header = submission.idempotency_key
            if header is not None and (problem := policies.check_idempotency_key(header)):
                raise RequestError(
                    422,
                    "invalid_idempotency_key",
                    problem,
                    [{"path": "Idempotency-Key", "value": header, "message": problem}],
                )
        today = datetime.fromtimestamp(self.clock(), UTC).date()
        key = policies.http_key(header, request.model_dump(mode="json"), today)
        return self.submit_request(request, trigger="http", idempotency_key=key)

    def on_timer(self, tick: TimerTick) -> Outcome:
        decision = policies.scheduled_retrain(
            tick.function_name,
            tick.scheduled_at,
            past_due=tick.past_due,
            data=self.settings.train_data_prefix,
        )
        return self.act(decision, trigger="timer", data_source="TRAIN_DATA_PREFIX")

    def on_blob(self, arrival: BlobArrival) -> Outcome:
        return self.blobs.on_blob(arrival)

    def on_drop_window(self, due: DropWindowDue) -> Outcome:
        """A drop's delayed message arrived: start its run if the window closed, else
        send the message again for the time left (never past the max delay)."""
        return self.blobs.on_drop_window(due)

    def sweep_drops(self) -> list[Outcome]:
        """Start the run of every drop whose coalescing window has closed."""
        return self.blobs.sweep_drops()

    # --- the one way to a run -------------------------------------------------------
    def act(
        self,
        decision: policies.Submit | policies.Skip,
        *,
        trigger: str,
        data_source: str = "the folder",
    ) -> Outcome:
        """Do what a policy decided: a skip is reported, a requested run becomes a
        TrainingRequest on its data folder and goes to `submit_request`."""
        if isinstance(decision, policies.Skip):
            return Skipped(decision.reason)
        try:
            request = TrainingRequest(data=decision.data, reason=decision.reason[:500])
        except ValueError as exc:
            return Skipped(f"{data_source} {decision.data!r} cannot be trained on: {exc}")
        return self.submit_request(
            request, trigger=trigger, idempotency_key=decision.idempotency_key
        )

    def submit_request(self, request: AnyRequest, *, trigger: str, idempotency_key: str) -> Outcome:
        run_id = run_id_for(idempotency_key)
        telemetry.bind(run_id=run_id, trigger=trigger, idempotency_key=idempotency_key)
        if request.dry_run:
            description = self.submitter.describe(request, run_id=run_id, trigger=trigger)
            return DryRun(run_id, description, request.model_dump(mode="json"))
        if request.callback_url:
            try:
                self.notifier.check(request.callback_url)
            except UnsafeCallback as exc:
                raise RequestError(
                    422,
                    "unsafe_callback_url",
                    str(exc),
                    [{"path": "callback_url", "value": request.callback_url, "message": str(exc)}],
                ) from None
        return self.admission.admit(request, run_id=run_id, trigger=trigger, key=idempotency_key)

    # --- reading and steering runs --------------------------------------------------
    def get_run(self, run_id: str) -> RunRecord:
        return self.reads.get_run(run_id)

    def list_runs(self, limit: int = 20) -> list[RunRecord]:
        return self.reads.list_runs(limit)

    def cancel_run(self, run_id: str) -> RunRecord:
        """A queued run is canceled here and ends at once (leaves the queue, gets its
        callback); a run the backend holds is canceled there, and ends when the
        backend says so."""
        canceled = self.reads.cancel_queued(run_id)
        if canceled is None:
            return self.submitter.cancel(run_id)
        self.admission.withdraw(canceled.key)
        from triggers.monitor import RunMonitor  # the monitor builds on this service

        # The run's end, as an event: its callback now, not at the next tick.
        RunMonitor(self).run_ended(run_id)
        return self.reads.from_ledger(self.ledger.get(canceled.key) or canceled)

    # --- recovery and the concurrency queue -----------------------------------------
    def recover(self, *, grace_s: float = CLAIM_GRACE_S) -> list[Outcome]:
        """Submit claims that never reached the backend (a crash between claim and
        submit) and retryable failures."""
        return self.admission.recover(grace_s=grace_s)

    def dispatch_waiting(self) -> list[Outcome]:
        """Submit queued runs (oldest first) while there is room under the limit."""
        return self.admission.dispatch_waiting()
