"""Queue-triggered functions, the way the host runs them: poll the queue, hand each
visible message to the function, delete it when the call returns, make it visible
again when the call fails, and after `maxDequeueCount` failed tries (host.json
`extensions.queues`, default 5) move it to `<queue>-poison`
(https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue-trigger,
"Poison messages" and "Polling algorithm").

Two sources behind one shape: a Storage queue (Azurite, or Azure with `func start`)
read with azure-storage-queue, and the folder queue of the embedded default
(triggers/queues.py). A message being handled is leased (hidden) meanwhile, so a
crash mid-call leaves it to come back, as in Azure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from azure.functions.queue import QueueMessage

from triggers.host.functions import QueueFunction
from triggers.queues import FolderQueue, account_queue_client, queue_client

log = logging.getLogger("aml_trigger.host.queues")

MAX_DEQUEUE_COUNT = 5
LEASE_S = 600.0  # the host keeps a message hidden while its function runs


@dataclass(frozen=True)
class Leased:
    id: str
    text: str
    dequeue_count: int
    handle: Any


class FolderSource:
    def __init__(self, queue: FolderQueue) -> None:
        self.queue = queue

    def receive(self) -> list[Leased]:
        return [
            Leased(m.id, m.text, m.dequeue_count, m) for m in self.queue.receive(lease_s=LEASE_S)
        ]

    def complete(self, leased: Leased) -> None:
        self.queue.delete(leased.handle)

    def retry(self, leased: Leased, delay_s: float) -> None:
        self.queue.release(leased.handle, delay_s=delay_s)

    def poison(self, leased: Leased) -> None:
        FolderQueue(self.queue.dir.parent, f"{self.queue.name}-poison").send(leased.text,
                                                                             delay_s=0)  # fmt: skip
        self.queue.delete(leased.handle)

    def next_visible_in(self) -> float | None:
        return self.queue.next_visible_in()


class StorageSource:
    def __init__(self, client, poison_client) -> None:  # azure.storage.queue.QueueClient
        self.client = client
        self.poison_client = poison_client

    @classmethod
    def from_connection_string(cls, connection_string: str, name: str) -> StorageSource:
        return cls(queue_client(connection_string, name),
                   queue_client(connection_string, f"{name}-poison"))  # fmt: skip

    def receive(self) -> list[Leased]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            messages = list(
                self.client.receive_messages(
                    messages_per_page=16, visibility_timeout=int(LEASE_S), max_messages=16
                )  # fmt: skip
            )
        except ResourceNotFoundError:
            return []  # nothing was ever sent: the queue does not exist yet
        return [Leased(m.id, m.content, m.dequeue_count, m) for m in messages]

    def complete(self, leased: Leased) -> None:
        self.client.delete_message(leased.handle)

    def retry(self, leased: Leased, delay_s: float) -> None:
        self.client.update_message(leased.handle, visibility_timeout=int(delay_s))

    def poison(self, leased: Leased) -> None:
        from azure.core.exceptions import ResourceExistsError

        try:
            self.poison_client.create_queue()
        except ResourceExistsError:
            pass
        self.poison_client.send_message(leased.text)
        self.client.delete_message(leased.handle)

    def next_visible_in(self) -> float | None:
        return None  # unknown without a request: poll at the interval


@dataclass
class QueueReport:
    delivered: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    poisoned: list[str] = field(default_factory=list)


class QueueRunner:
    def __init__(
        self,
        functions: tuple[QueueFunction, ...],
        open_source: Callable[[QueueFunction], Any],
        *,
        max_dequeue_count: int = MAX_DEQUEUE_COUNT,
        retry_delay_s: float = 0.0,
    ) -> None:
        self.sources = [(function, open_source(function)) for function in functions]
        self.max_dequeue_count = max_dequeue_count
        self.retry_delay_s = retry_delay_s  # host.json `visibilityTimeout`

    def poll(self) -> QueueReport:
        report = QueueReport()
        for function, source in self.sources:
            for leased in source.receive():
                self._deliver(function, source, leased, report)
        return report

    def run_until(self, stop: threading.Event, interval_s: float = 2.0) -> None:
        while not stop.is_set():
            try:
                self.poll()
            except Exception:  # storage down (Azurite stopped): try again next interval
                log.exception("queue poll failed")
            waits = [s.next_visible_in() for _, s in self.sources]
            soonest = min((w for w in waits if w is not None), default=interval_s)
            stop.wait(min(interval_s, max(soonest, 0.05)))

    def _deliver(self, function: QueueFunction, source, leased: Leased, report) -> None:
        if leased.dequeue_count > self.max_dequeue_count:
            source.poison(leased)  # its earlier tries died with their process
            report.poisoned.append(leased.id)
            return
        message = QueueMessage(
            id=leased.id,
            body=leased.text.encode(),
            dequeue_count=leased.dequeue_count,
            insertion_time=datetime.now(UTC),
        )
        try:
            function.call(message)
        except Exception as exc:
            log.warning("queue function %s failed on message %s (try %d): %s: %s",
                        function.name, leased.id, leased.dequeue_count,
                        type(exc).__name__, exc)  # fmt: skip
            if leased.dequeue_count >= self.max_dequeue_count:
                source.poison(leased)
                report.poisoned.append(leased.id)
                log.error("message %s moved to %s-poison", leased.id, function.queue_name)
            else:
                source.retry(leased, self.retry_delay_s)
                report.failed.append(leased.id)
            return
        source.complete(leased)
        report.delivered.append(leased.id)


def open_source_for(settings, *, clock: Callable[[], float] = time.time):
    """Sources on the app's storage: the folder queue for folder storage, else
    Storage queues (the connection a function names must be AzureWebJobsStorage,
    the only one the app configures)."""

    def open_source(function: QueueFunction):
        if settings.storage_kind == "folder":
            return FolderSource(FolderQueue(Path(settings.home) / "queues", function.queue_name,
                                            clock=clock))  # fmt: skip
        name = function.queue_name
        return StorageSource(account_queue_client(settings, name),
                             account_queue_client(settings, f"{name}-poison"))  # fmt: skip

    return open_source
