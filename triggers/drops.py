"""Open drop folders: blobs seen in a folder whose run has not started yet.

Only the timing is kept (first and last arrival): what a drop contains is read
from storage when it fires, so its run key covers exactly the blobs present then,
and a redelivered blob event can at worst reopen a drop whose key is already in
the ledger (no second run).
"""

from __future__ import annotations

from dataclasses import dataclass

from triggers.state import StateStore


@dataclass(frozen=True)
class OpenDrop:
    container: str
    folder: str
    first_seen: float
    last_seen: float
    events: int
    version: str


class DropBook:
    NS = "drops"

    def __init__(self, state: StateStore) -> None:
        self.state = state

    @staticmethod
    def _key(container: str, folder: str) -> str:
        return f"{container}/{folder}"

    def touch(self, container: str, folder: str, now: float) -> OpenDrop:
        """Record one arrival in the folder's drop (compare-and-swap, so concurrent
        arrivals all count and none overwrites another). The arrival that opened the
        drop gets `events == 1`."""
        key = self._key(container, folder)
        while True:
            found = self.state.get(self.NS, key)
            if found is None:
                doc = {"container": container, "folder": folder, "first_seen": now,
                       "last_seen": now, "events": 1}  # fmt: skip
                written = self.state.create(self.NS, key, doc)
            else:
                doc = dict(found.doc)
                doc["last_seen"] = max(doc["last_seen"], now)
                doc["events"] += 1
                written = self.state.replace(self.NS, key, doc, found.version)
            if written is not None:
                return _drop(doc, written.version)

    def get(self, container: str, folder: str) -> OpenDrop | None:
        found = self.state.get(self.NS, self._key(container, folder))
        return _drop(found.doc, found.version) if found else None

    def open_drops(self) -> list[OpenDrop]:
        return [_drop(v.doc, v.version) for _, v in self.state.items(self.NS)]

    def settle(self, drop: OpenDrop, now: float) -> OpenDrop | None:
        """The drop's run was submitted: close it. If blobs arrived after it was read,
        they start a new window (their run, if the content differs, comes later):
        that reopened drop is returned, so its window gets a message of its own."""
        key = self._key(drop.container, drop.folder)
        if self.state.delete(self.NS, key, drop.version):
            return None
        while True:
            found = self.state.get(self.NS, key)
            if found is None:
                return None
            doc = dict(found.doc)
            doc["first_seen"] = now
            written = self.state.replace(self.NS, key, doc, found.version)
            if written is not None:
                return _drop(doc, written.version)


def _drop(doc: dict, version: str) -> OpenDrop:
    return OpenDrop(
        doc["container"], doc["folder"], doc["first_seen"], doc["last_seen"], doc["events"], version
    )
