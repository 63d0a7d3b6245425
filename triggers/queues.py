"""Delayed messages: a Storage queue in Azure (and on Azurite), a folder queue locally.

A message sent with a visibility timeout stays hidden for that long and is then
delivered to the queue-triggered function: the quiet window of a drop is such a
message, so nothing polls while a drop is filling.
- Put Message's `visibilitytimeout` (0 s to 7 days, below the message's time to
  live): https://learn.microsoft.com/rest/api/storageservices/put-message, sent
  with azure-storage-queue's `QueueClient.send_message(content, visibility_timeout=)`.
- The Functions queue trigger expects Base64 text by default (host.json
  `extensions.queues.messageEncoding`), retries a failing message up to
  `maxDequeueCount` (5) times, then moves it to `<queue>-poison`:
  https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue-trigger
- `FolderQueue` keeps the same contract in `$AML_TRIGGER_HOME/queues/<queue>/`: one
  file per message, named by the time it becomes visible; receiving leases it (the
  file is renamed to a later time, as a Storage receive hides the message), so two
  receivers never both get it, and a receiver that dies leaves it to reappear.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

DROP_QUEUE = "aml-trigger-drop-windows"
MAX_VISIBILITY_S = 7 * 24 * 3600


class DelayedQueue(Protocol):
    name: str

    def send(self, text: str, *, delay_s: float) -> None: ...


def visibility_seconds(delay_s: float) -> int:
    """Whole seconds as Put Message takes them: never early (rounded up), never
    over the service's 7-day limit."""
    return max(0, min(MAX_VISIBILITY_S, math.ceil(delay_s)))


# --- the folder queue (the embedded default) ---------------------------------------------
@dataclass(frozen=True)
class FolderMessage:
    id: str
    text: str
    dequeue_count: int
    path: Path


class FolderQueue:
    def __init__(self, root: Path, name: str, *, clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.dir = Path(root) / name
        self.clock = clock

    def send(self, text: str, *, delay_s: float) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        visible_at = self.clock() + visibility_seconds(delay_s)
        final = self.dir / _file_name(visible_at, uuid.uuid4().hex, 0)
        tmp = self.dir / f".{final.name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, final)  # receivers never see a half-written message

    def receive(self, *, lease_s: float, limit: int = 16) -> list[FolderMessage]:
        """Visible messages, each hidden again for `lease_s` and its dequeue count
        raised (as Get Messages does)."""
        now = self.clock()
        out: list[FolderMessage] = []
        for path, visible_at, msg_id, count in self._entries():
            if visible_at > now or len(out) >= limit:
                break
            leased = path.with_name(_file_name(now + lease_s, msg_id, count + 1))
            try:
                os.replace(path, leased)
                text = leased.read_text(encoding="utf-8")
            except FileNotFoundError:
                continue  # another receiver took it
            out.append(FolderMessage(msg_id, text, count + 1, leased))
        return out

    def delete(self, message: FolderMessage) -> None:
        message.path.unlink(missing_ok=True)

    def release(self, message: FolderMessage, *, delay_s: float = 0.0) -> None:
        """Make a leased message visible again after `delay_s` (Update Message)."""
        again = message.path.with_name(
            _file_name(self.clock() + delay_s, message.id, message.dequeue_count)
        )
        try:
            os.replace(message.path, again)
        except FileNotFoundError:
            pass

    def next_visible_in(self) -> float | None:
        for _, visible_at, _, _ in self._entries():
            return max(0.0, visible_at - self.clock())
        return None

    def texts(self) -> list[str]:
        return [p.read_text(encoding="utf-8") for p, *_ in self._entries()]

    def _entries(self) -> Iterator[tuple[Path, float, str, int]]:
        try:
            names = sorted(n for n in os.listdir(self.dir) if n.endswith(".msg"))
        except FileNotFoundError:
            return
        for name in names:
            stamp, msg_id, count = name[: -len(".msg")].split("-")
            yield self.dir / name, int(stamp) / 1000, msg_id, int(count)


def _file_name(visible_at: float, msg_id: str, dequeue_count: int) -> str:
    # Milliseconds, zero-padded: the name sorts in the order messages become visible.
    return f"{round(visible_at * 1000):015d}-{msg_id}-{dequeue_count}.msg"


# --- Storage queues (Azure, Azurite) -----------------------------------------------------
class StorageQueue:
    """A queue of the app's storage account, written as the Functions host reads it
    (Base64 text). The queue is created on first use."""

    def __init__(self, client) -> None:  # azure.storage.queue.QueueClient
        self.client = client
        self.name = client.queue_name

    @classmethod
    def from_connection_string(cls, connection_string: str, name: str) -> StorageQueue:
        return cls(queue_client(connection_string, name))

    def send(self, text: str, *, delay_s: float) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self.client.send_message(text, visibility_timeout=visibility_seconds(delay_s))
        except ResourceNotFoundError:
            self._create()
            self.client.send_message(text, visibility_timeout=visibility_seconds(delay_s))

    def _create(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        try:
            self.client.create_queue()
        except ResourceExistsError:
            pass


def queue_client(connection_string: str, name: str, **kwargs):
    from azure.storage.queue import (
        QueueClient,
        TextBase64DecodePolicy,
        TextBase64EncodePolicy,
    )

    from pipeline.blob_storage import EMULATOR_API_VERSION, is_emulator

    if is_emulator(connection_string):
        kwargs.setdefault("api_version", EMULATOR_API_VERSION)
    return QueueClient.from_connection_string(
        connection_string,
        name,
        message_encode_policy=TextBase64EncodePolicy(),
        message_decode_policy=TextBase64DecodePolicy(),
        **kwargs,
    )


def account_queue_client(settings, name: str, **kwargs):
    """A queue of the account AzureWebJobsStorage names: by its connection string, or
    by identity (the host's `AzureWebJobsStorage__queueServiceUri`; else the blob
    endpoint's queue twin), with the same credential as the blob clients."""
    connection = settings.storage_connection.get_secret_value()
    if connection.strip():
        return queue_client(connection, name, **kwargs)
    import os

    from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

    from pipeline.blob_storage import _credential

    url = os.environ.get("AzureWebJobsStorage__queueServiceUri") or (
        settings.storage_account_url.replace(".blob.", ".queue.", 1)
    )
    return QueueClient(
        url,
        name,
        credential=_credential(settings.storage_client_id),
        message_encode_policy=TextBase64EncodePolicy(),
        message_decode_policy=TextBase64DecodePolicy(),
        **kwargs,
    )


def open_queue(settings, name: str, *, clock: Callable[[], float] = time.time) -> DelayedQueue:
    """The folder queue for folder storage, else a queue in the storage account."""
    if settings.storage_kind == "folder":
        return FolderQueue(Path(settings.home) / "queues", name, clock=clock)
    return StorageQueue(account_queue_client(settings, name))
