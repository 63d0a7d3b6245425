"""TriggerService: validation -> policy -> ledger -> submitter, one typed outcome.

Every trigger (HTTP, timer, blob, CLI) ends in `submit_request`, so dedupe, the
concurrency limit, crash safety and callback checks are the same for all of them.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.request import TrainingRequest
from pipeline.runs import RunRecord, run_id_for
from pipeline.storage import Storage
from pipeline.submitter import RunNotFound, SubmissionError, Submitter
from pipeline.verification import AnyRequest, stored_request
from triggers import decode, policies, telemetry
from triggers.drops import DropBook, OpenDrop
from triggers.events import BlobArrival, DropWindowDue, HttpSubmission, TimerTick
from triggers.ledger import LedgerEntry, RunLedger
from triggers.notify import CallbackNotifier, UnsafeCallback
from triggers.validation import RequestError, parse_training_request, parse_verification_request

log = logging.getLogger("aml_trigger.service")

# A claim younger than this may still be on its way to the backend in another
# process; recovery leaves it alone. At host start nothing else is submitting.
CLAIM_GRACE_S = 120.0


@dataclass(frozen=True)
class Accepted:
    """A run exists for the request: `created` is False for a repeat."""

    run: RunRecord
    created: bool
    note: str = ""


@dataclass(frozen=True)
class Skipped:
    reason: str


@dataclass(frozen=True)
class Deferred:
    """Recorded, not yet a run (a blob joined a drop that is still filling)."""

    reason: str


@dataclass(frozen=True)
class DryRun:
    run_id: str
    description: dict[str, Any]  # the submitter's describe(): for the operator's eyes
    request: dict[str, Any] = field(default_factory=dict)  # as validated, defaults filled


Outcome = Accepted | Skipped | Deferred | DryRun


def refuse_for_backend(request: Any, backend: str) -> None:
    """422 for what the configured backend cannot run (deploy_target=local on aml),
    before anything is recorded."""
    refusals = getattr(request, "backend_refusals", lambda _: [])(backend)
    if refusals:
        names = ", ".join(r["path"] for r in refusals)
        raise RequestError(
            422, "invalid_request", f"{len(refusals)} invalid field(s): {names}", refusals
        )


class IdempotencyConflict(RequestError):
    def __init__(self, key: str) -> None:
        super().__init__(
            422,
            "idempotency_key_reused",
            f"Idempotency-Key {key!r} was already used with a different request body; "
            "send the same body to get that run, or a new key for a new run",
            [{"path": "Idempotency-Key", "value": key, "message": "reused with another body"}],
        )


# Ledger states that never count against MAX_CONCURRENT_RUNS.
_NOT_ACTIVE = frozenset({"waiting", "failed", "canceled"})


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
        # triggers.queues.DelayedQueue: each drop's quiet window is a delayed message
        # on it (None: only the safety net's sweep closes windows).
        self.drop_queue = drop_queue
        self.submitter = submitter
        self.ledger = ledger
        self.drops = drops
        self.storage = storage
        self.notifier = notifier
        self.clock = clock
        # One admission at a time per process: threads of the HTTP server then wait
        # on a lock instead of in SQLite's busy handler (which sleeps up to 100 ms a
        # turn), and the concurrency limit is read and acted on without a race
        # between this process's own threads. Instances scaled out still rely on
        # the ledger's conditional writes.
        self._admission = threading.Lock()
        self.rules = policies.BlobRules(
            prefix=settings.blob_prefix,
            marker_name=settings.blob_marker_name,
            max_bytes=settings.blob_max_bytes,
        )
        self.window = policies.CoalescingWindow(
            quiet_s=settings.blob_quiet_seconds, max_delay_s=settings.blob_max_delay_seconds
        )

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
        when = tick.scheduled_at.strftime("%Y-%m-%d %H:%M:%SZ")
        late = " (past due: the host was down at that time)" if tick.past_due else ""
        try:
            request = TrainingRequest(
                data=self.settings.train_data_prefix,
                reason=f"scheduled retrain {when}{late}",
            )
        except ValueError as exc:
            return Skipped(f"TRAIN_DATA_PREFIX is not usable: {exc}")
        key = policies.timer_key(tick.function_name, tick.scheduled_at)
        return self.submit_request(request, trigger="timer", idempotency_key=key)

    def on_blob(self, arrival: BlobArrival) -> Outcome:
        if arrival.container != self.settings.incoming_container:
            return Skipped(
                f"container {arrival.container!r} is not INCOMING_CONTAINER "
                f"{self.settings.incoming_container!r}"
            )
        kind = policies.classify_blob(arrival, self.rules)
        if isinstance(kind, policies.Skip):
            telemetry.decision("blob filter", "skip", kind.reason)
            return Skipped(kind.reason)
        action = policies.blob_decision(kind, self.settings.blob_batch_mode)
        telemetry.decision("blob filter", action, kind=kind)
        if action == "run-now":
            return self._fire_drop(arrival.container, arrival.folder, f"marker {arrival.name}")
        if action == "run-blob":
            etag = arrival.etag or self._etag_of(arrival)
            if etag is None:
                return Skipped(f"{arrival.name!r} no longer exists")
            request = self._drop_request(arrival.folder, f"blob {arrival.name}")
            if isinstance(request, Skipped):
                return request
            key = policies.blob_key(arrival.container, arrival.name, etag)
            return self.submit_request(request, trigger="blob", idempotency_key=key)
        if self.settings.blob_batch_mode == "marker":
            return Deferred(
                f"{arrival.name!r} waits for {self.settings.blob_marker_name!r} "
                f"in {arrival.folder or '/'}"
            )
        drop = self.drops.touch(arrival.container, arrival.folder, self.clock())
        if drop.events == 1:
            # Later arrivals move `last_seen`; the message, when it comes, reads it.
            self._schedule_window(drop, must_send=False)
        return Deferred(f"{arrival.name!r} joined drop {arrival.folder or '/'!r}")

    def on_drop_window(self, due: DropWindowDue) -> Outcome:
        """A drop's delayed message arrived: start its run if the window closed, else
        send the message again for the time left (never past the max delay)."""
        drop = self.drops.get(due.container, due.folder)
        if drop is None:
            return Skipped(f"drop {due.folder or '/'!r} has no open window (its run started)")
        decision = self.window.decide(
            first_seen=drop.first_seen, last_seen=drop.last_seen, now=self.clock()
        )
        telemetry.decision("quiet window", type(decision).__name__.lower(), decision.reason)
        if isinstance(decision, policies.Wait):
            self._schedule_window(drop, must_send=True)
            return Deferred(decision.reason)
        return self._fire_drop(due.container, due.folder, decision.reason, drop)

    def sweep_drops(self) -> list[Outcome]:
        """Start the run of every drop whose coalescing window has closed."""
        now = self.clock()
        outcomes: list[Outcome] = []
        for drop in self.drops.open_drops():
            decision = self.window.decide(
                first_seen=drop.first_seen, last_seen=drop.last_seen, now=now
            )
            if isinstance(decision, policies.Submit):
                with telemetry.event("blob", drop=f"{drop.container}/{drop.folder}"):
                    outcome = self._fire_drop(drop.container, drop.folder, decision.reason, drop)
                    telemetry.record_outcome(outcome)
                outcomes.append(outcome)
        return outcomes

    # --- the one way to a run -------------------------------------------------------
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
        with self._admission:
            return self._admit(request, run_id, trigger, idempotency_key)

    def _admit(
        self, request: AnyRequest, run_id: str, trigger: str, idempotency_key: str
    ) -> Outcome:
        canonical = request.model_dump(mode="json")
        with telemetry.span("ledger claim") as claim:
            entry, created = self.ledger.claim(
                idempotency_key,
                run_id=run_id,
                trigger=trigger,
                request=canonical,
                fingerprint=policies.request_fingerprint(canonical),
            )
            claim.set_attribute("aml_trigger.created", created)
            claim.set_attribute("aml_trigger.ledger_status", entry.status)
        if not created:
            # A client-chosen key reused for another body is the client's mistake; for
            # keys we derive (blob, timer) the key IS the event, and only details such
            # as the reason text ("past due", "marker") may differ between deliveries.
            reused = entry.fingerprint != policies.request_fingerprint(canonical)
            if reused and idempotency_key.startswith(("http:", "cli:")):
                raise IdempotencyConflict(idempotency_key.partition(":")[2])
            if entry.status == "failed":
                self.ledger.reopen(entry)  # a final failure left the open index
                retried = self.ledger.update(entry, status="claimed", attempts=entry.attempts + 1)
                if retried is not None:
                    return self._submit(retried)
            return Accepted(self._record(entry), created=False)
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
            return Accepted(self._record(waiting), created=True, note=decision.reason)
        return self._submit(entry)

    def _submit(self, entry: LedgerEntry) -> Accepted:
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
            self.ledger.update(entry, status="failed", error=exc.message, retryable=exc.retryable)
            if not exc.retryable:
                self.ledger.close(entry.key)
            raise
        self.ledger.update(entry, status="submitted", run_status=record.status, error=None)
        return Accepted(record, created=True)

    # --- reading and steering runs --------------------------------------------------
    def get_run(self, run_id: str) -> RunRecord:
        try:
            return self.submitter.get(run_id)
        except RunNotFound:
            entry = self.ledger.by_run_id(run_id)
            if entry is None:
                raise
            return self._from_ledger(entry)

    def list_runs(self, limit: int = 20) -> list[RunRecord]:
        runs = {r.run_id: r for r in self.submitter.list_runs(limit)}
        for entry in self.ledger.open_entries():
            if entry.status != "submitted" and entry.run_id not in runs:
                runs[entry.run_id] = self._from_ledger(entry)
        return sorted(runs.values(), key=lambda r: r.created_at, reverse=True)[:limit]

    def cancel_run(self, run_id: str) -> RunRecord:
        entry = self.ledger.by_run_id(run_id)
        if entry is not None and entry.status in ("waiting", "failed"):
            canceled = self.ledger.update(entry, status="canceled")
            if canceled is not None:
                self.ledger.close(entry.key)
                return self._from_ledger(canceled)
        return self.submitter.cancel(run_id)

    # --- recovery and the concurrency queue -----------------------------------------
    def recover(self, *, grace_s: float = CLAIM_GRACE_S) -> list[Outcome]:
        """Submit claims that never reached the backend (a crash between claim and
        submit) and retryable failures. Each is taken over by compare-and-swap, so
        two recovering instances do not both submit it."""
        now = self.clock()
        outcomes: list[Outcome] = []
        for entry in self.ledger.open_entries():
            stale = now - entry.updated_at >= grace_s
            if entry.status == "claimed" and stale or entry.status == "failed" and entry.retryable:
                owned = self.ledger.update(entry, status="claimed", attempts=entry.attempts + 1)
                if owned is None:
                    continue
                try:
                    outcomes.append(self._submit(owned))
                except SubmissionError as exc:
                    log.warning("resubmitting %s failed: %s", entry.run_id, exc.message)
        return outcomes

    def dispatch_waiting(self) -> list[Outcome]:
        """Submit queued runs (oldest first) while there is room under the limit."""
        waiting = sorted(
            (e for e in self.ledger.open_entries() if e.status == "waiting"),
            key=lambda e: e.claimed_at,
        )
        outcomes: list[Outcome] = []
        with self._admission:
            for entry in waiting:
                if self._active_runs() >= self.settings.max_concurrent_runs:
                    break
                owned = self.ledger.update(entry, status="claimed")
                if owned is not None:
                    outcomes.append(self._submit(owned))
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

    # --- helpers --------------------------------------------------------------------
    def _fire_drop(
        self, container: str, folder: str, reason: str, drop: OpenDrop | None = None
    ) -> Outcome:
        files = {
            blob.name: blob.etag
            for blob in self.storage.list_blobs(container, folder)
            if self._is_data(blob)
        }
        if drop is None:
            drop = self.drops.get(container, folder)
        if not files:
            if drop is not None:
                self._settle(drop)
            return Skipped(f"drop {folder or '/'!r} has no data files ({reason})")
        request = self._drop_request(folder, f"drop {folder or '/'} ({len(files)} files): {reason}")
        if isinstance(request, Skipped):
            return request
        key = policies.drop_key(container, folder, files)
        outcome = self.submit_request(request, trigger="blob", idempotency_key=key)
        if drop is not None:
            self._settle(drop)
        return outcome

    def _settle(self, drop: OpenDrop) -> None:
        reopened = self.drops.settle(drop, self.clock())
        if reopened is not None:
            self._schedule_window(reopened, must_send=False)

    def _schedule_window(self, drop: OpenDrop, *, must_send: bool) -> None:
        """Send the drop's delayed message, visible when its window can next close.
        A lost message only delays the run: the safety net sweeps open drops. In the
        queue function (`must_send`) a failed send fails the call, so the host
        delivers the message again."""
        if self.drop_queue is None:
            return
        decision = self.window.decide(
            first_seen=drop.first_seen, last_seen=drop.last_seen, now=self.clock()
        )
        delay = decision.delay_s if isinstance(decision, policies.Wait) else 0.0
        try:
            self.drop_queue.send(decode.drop_window_message(drop.container, drop.folder),
                                 delay_s=delay)  # fmt: skip
        except Exception as exc:
            if must_send:
                raise
            log.warning("drop %s: its delayed message was not sent (%s: %s); the safety "
                        "net starts it", drop.folder or "/", type(exc).__name__, exc)  # fmt: skip

    def _is_data(self, blob) -> bool:
        arrival = BlobArrival(container=blob.container, name=blob.name, size=blob.size)
        return policies.classify_blob(arrival, self.rules) == "data"

    def _drop_request(self, folder: str, reason: str) -> TrainingRequest | Skipped:
        try:
            return TrainingRequest(data=folder, reason=reason[:500])
        except ValueError as exc:
            return Skipped(f"folder {folder!r} cannot be trained on: {exc}")

    def _etag_of(self, arrival: BlobArrival) -> str | None:
        info = self.storage.get_blob(arrival.container, arrival.name)
        return info.etag if info else None

    def _record(self, entry: LedgerEntry) -> RunRecord:
        if entry.status == "submitted":
            try:
                return self.submitter.get(entry.run_id)
            except RunNotFound:
                pass
        return self._from_ledger(entry)

    def _from_ledger(self, entry: LedgerEntry) -> RunRecord:
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
