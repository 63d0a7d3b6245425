"""Blob-created events and drop folders: which blobs count, when a drop is ready,
and the request each one becomes."""

from __future__ import annotations

import logging
from collections.abc import Callable

from pipeline.storage import Storage
from triggers import decode, policies, telemetry
from triggers.drops import DropBook, OpenDrop
from triggers.events import BlobArrival, DropWindowDue
from triggers.outcomes import Deferred, Outcome, Skipped

Act = Callable[..., Outcome]  # TriggerService.act: a decision -> its outcome

log = logging.getLogger("aml_trigger.service")


class BlobTriggers:
    def __init__(
        self,
        settings,
        storage: Storage,
        drops: DropBook,
        act: Act,
        *,
        clock,
        drop_queue=None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.drops = drops
        self.act = act
        self.clock = clock
        self.drop_queue = drop_queue  # see TriggerService.drop_queue
        self.rules = policies.BlobRules(
            prefix=settings.blob_prefix,
            marker_name=settings.blob_marker_name,
            max_bytes=settings.blob_max_bytes,
        )
        self.window = policies.CoalescingWindow(
            quiet_s=settings.blob_quiet_seconds, max_delay_s=settings.blob_max_delay_seconds
        )

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
            key = policies.blob_key(arrival.container, arrival.name, etag)
            run = policies.Submit(key, data=arrival.folder, reason=f"blob {arrival.name}")
            return self.act(run, trigger="blob")
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
        run = policies.Submit(
            policies.drop_key(container, folder, files),
            data=folder,
            reason=f"drop {folder or '/'} ({len(files)} files): {reason}",
        )
        outcome = self.act(run, trigger="blob")
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

    def _etag_of(self, arrival: BlobArrival) -> str | None:
        info = self.storage.get_blob(arrival.container, arrival.name)
        return info.etag if info else None
