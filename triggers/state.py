"""Small JSON documents with conditional writes: what the ledger and drops stand on.

Two implementations behind one interface:
- `SqliteState`: `$AML_TRIGGER_HOME/ledger.db`, the embedded default (WAL, so the
  CLI and `aml-trigger serve` can share it).
- `BlobState`: the app's storage account (Azure or Azurite): create is a write with
  `If-None-Match: *`, replace and delete carry the ETag read (`If-Match`), so
  instances scaled out never overwrite each other's decisions.

Every write is compare-and-swap: `create` returns None when the key exists,
`replace`/`delete` return None/False when someone changed it since it was read.
`swap` applies a pure change to one document atomically: in one SQLite write
transaction (`BEGIN IMMEDIATE`), or on blobs by optimistic concurrency (read the
ETag, write with `If-Match`, on 412 Precondition Failed read again: "Manage
concurrency in Blob Storage", learn.microsoft.com/azure/storage/blobs/concurrency-manage).
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from triggers.validation import RequestError

STATE_CONTAINER = "aml-trigger-state"
# How long `BlobState.swap` keeps retrying a document others keep changing; each
# round one writer wins, so this bounds a burst, not a steady state.
SWAP_DEADLINE_S = 60.0

T = TypeVar("T")
# A change gets the current document (None: none yet) and returns the document to
# write (None or unchanged: write nothing) and a result for the caller. It may run
# more than once (optimistic retries), so it must be pure.
Change = Callable[[dict[str, Any] | None], tuple[dict[str, Any] | None, T]]


class StateContention(RequestError):
    """A `swap` lost to other writers until SWAP_DEADLINE_S passed: answered 503 (try
    again), the request was not decided."""

    def __init__(self, ns: str, key: str) -> None:
        super().__init__(
            503,
            "state_busy",
            f"the state document {ns}/{key} kept changing for {SWAP_DEADLINE_S:.0f}s "
            "(too many requests deciding at once); send the request again",
        )


# The state store's requests are housekeeping (several per POST, more per sweep): a
# dependency span each would bury the event's own trace and bill ingestion for
# nothing. azure-core skips its spans for an operation given tracing_options
# {"enabled": False} (`distributed_trace` and DistributedTracingPolicy: "User can
# explicitly disable tracing for this request"), and OpenTelemetry's HTTP
# instrumentations (requests, urllib3: on in the Azure Monitor distro the Functions
# worker configures) skip requests made while instrumentation is suppressed.
_UNTRACED = {"tracing_options": {"enabled": False}}


@contextmanager
def _untraced() -> Iterator[None]:
    from opentelemetry import context

    try:
        from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY as key
    except ImportError:  # older API: the instrumentations also read the plain key
        key = "suppress_instrumentation"
    token = context.attach(context.set_value(key, True))
    try:
        yield
    finally:
        context.detach(token)


@dataclass(frozen=True)
class Versioned:
    doc: dict[str, Any]
    version: str


class StateStore(Protocol):
    def get(self, ns: str, key: str) -> Versioned | None: ...

    def create(self, ns: str, key: str, doc: dict[str, Any]) -> Versioned | None: ...

    def replace(self, ns: str, key: str, doc: dict[str, Any], version: str) -> Versioned | None: ...

    def delete(self, ns: str, key: str, version: str | None = None) -> bool: ...

    def items(self, ns: str) -> Iterator[tuple[str, Versioned]]: ...

    def swap(self, ns: str, key: str, change: Change[T]) -> T: ...


class SqliteState:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._swapping = threading.Lock()
        with self._conn() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS state (ns TEXT NOT NULL, key TEXT NOT NULL, "
                "doc TEXT NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (ns, key))"
            )

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def get(self, ns: str, key: str) -> Versioned | None:
        row = (
            self._conn()
            .execute("SELECT doc, version FROM state WHERE ns=? AND key=?", (ns, key))
            .fetchone()
        )
        return Versioned(json.loads(row[0]), str(row[1])) if row else None

    def create(self, ns: str, key: str, doc: dict[str, Any]) -> Versioned | None:
        cur = self._conn().execute(
            "INSERT OR IGNORE INTO state (ns, key, doc, version) VALUES (?, ?, ?, 1)",
            (ns, key, json.dumps(doc)),
        )
        return Versioned(doc, "1") if cur.rowcount == 1 else None

    def replace(self, ns: str, key: str, doc: dict[str, Any], version: str) -> Versioned | None:
        new = int(version) + 1
        cur = self._conn().execute(
            "UPDATE state SET doc=?, version=? WHERE ns=? AND key=? AND version=?",
            (json.dumps(doc), new, ns, key, int(version)),
        )
        return Versioned(doc, str(new)) if cur.rowcount == 1 else None

    def delete(self, ns: str, key: str, version: str | None = None) -> bool:
        if version is None:
            cur = self._conn().execute("DELETE FROM state WHERE ns=? AND key=?", (ns, key))
        else:
            cur = self._conn().execute(
                "DELETE FROM state WHERE ns=? AND key=? AND version=?", (ns, key, int(version))
            )
        return cur.rowcount == 1

    def swap(self, ns: str, key: str, change: Change[T]) -> T:
        # BEGIN IMMEDIATE takes the database's write lock before the read, so no
        # other process or thread writes between our read and our write. This
        # process's own threads queue on a lock first: SQLite's busy handler would
        # make them sleep up to 100 ms a turn.
        with self._swapping:
            return self._swap(conn=self._conn(), ns=ns, key=key, change=change)

    def _swap(self, *, conn: sqlite3.Connection, ns: str, key: str, change: Change[T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(
                "SELECT doc, version FROM state WHERE ns=? AND key=?", (ns, key)
            ).fetchone()
            doc = json.loads(row[0]) if row else None
            new, result = change(doc)
            if new is not None and new != doc:
                conn.execute(
                    "INSERT INTO state (ns, key, doc, version) VALUES (?, ?, ?, 1) "
                    "ON CONFLICT (ns, key) DO UPDATE SET doc=excluded.doc, version=version+1",
                    (ns, key, json.dumps(new)),
                )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def items(self, ns: str) -> Iterator[tuple[str, Versioned]]:
        rows = (
            self._conn()
            .execute("SELECT key, doc, version FROM state WHERE ns=? ORDER BY key", (ns,))
            .fetchall()
        )
        for key, doc, version in rows:
            yield key, Versioned(json.loads(doc), str(version))


class BlobState:
    """One blob per document: `<ns>/<sha256(key)>.json` holding {"key", "doc"}.
    Its requests make no spans (see _UNTRACED)."""

    def __init__(self, service, container: str = STATE_CONTAINER) -> None:
        from azure.core.exceptions import ResourceExistsError

        self.client = service.get_container_client(container)
        try:
            with _untraced():
                self.client.create_container(**_UNTRACED)
        except ResourceExistsError:
            pass

    @classmethod
    def from_connection_string(cls, connection_string: str) -> BlobState:
        from pipeline.blob_storage import blob_service_client

        return cls(blob_service_client(connection_string))

    @staticmethod
    def _name(ns: str, key: str) -> str:
        return f"{ns}/{hashlib.sha256(key.encode()).hexdigest()}.json"

    def get(self, ns: str, key: str) -> Versioned | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            with _untraced():
                download = self.client.get_blob_client(self._name(ns, key)).download_blob(
                    **_UNTRACED
                )
                data = download.readall()
        except ResourceNotFoundError:
            return None
        body = json.loads(data)
        return Versioned(body["doc"], download.properties.etag)

    def create(self, ns: str, key: str, doc: dict[str, Any]) -> Versioned | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

        blob = self.client.get_blob_client(self._name(ns, key))
        try:
            with _untraced():
                result = blob.upload_blob(
                    _body(key, doc),
                    overwrite=True,
                    match_condition=MatchConditions.IfMissing,  # If-None-Match: *
                    **_UNTRACED,
                )
        except (ResourceExistsError, ResourceModifiedError):
            return None
        return Versioned(doc, result["etag"])

    def replace(self, ns: str, key: str, doc: dict[str, Any], version: str) -> Versioned | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        blob = self.client.get_blob_client(self._name(ns, key))
        try:
            with _untraced():
                result = blob.upload_blob(
                    _body(key, doc),
                    overwrite=True,
                    etag=version,
                    match_condition=MatchConditions.IfNotModified,
                    **_UNTRACED,
                )
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        return Versioned(doc, result["etag"])

    def delete(self, ns: str, key: str, version: str | None = None) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        blob = self.client.get_blob_client(self._name(ns, key))
        kwargs = {}
        if version is not None:
            kwargs = {"etag": version, "match_condition": MatchConditions.IfNotModified}
        try:
            with _untraced():
                blob.delete_blob(**kwargs, **_UNTRACED)
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def items(self, ns: str) -> Iterator[tuple[str, Versioned]]:
        from azure.core.exceptions import ResourceNotFoundError

        # Read under one suppression, yield outside it (a context attached in a
        # generator cannot be detached from the caller's).
        found = []
        with _untraced():
            for props in self.client.list_blobs(name_starts_with=f"{ns}/", **_UNTRACED):
                try:
                    download = self.client.get_blob_client(props.name).download_blob(**_UNTRACED)
                    data = download.readall()
                except ResourceNotFoundError:
                    continue  # deleted between list and read
                found.append((data, download.properties.etag))
        for data, etag in found:
            body = json.loads(data)
            yield body["key"], Versioned(body["doc"], etag)

    def swap(self, ns: str, key: str, change: Change[T]) -> T:
        deadline = time.monotonic() + SWAP_DEADLINE_S
        backoff = 0.01
        while True:
            current = self.get(ns, key)
            doc = current.doc if current else None
            new, result = change(doc)
            if new is None or new == doc:
                return result
            if current is None:
                written = self.create(ns, key, new)  # If-None-Match: *
            else:
                written = self.replace(ns, key, new, current.version)  # If-Match: <ETag>
            if written is not None:
                return result
            if time.monotonic() > deadline:
                raise StateContention(ns, key)
            # Jittered: writers that lost together do not collide again together.
            time.sleep(random.uniform(0, backoff))
            backoff = min(backoff * 2, 0.5)


def _body(key: str, doc: dict[str, Any]) -> bytes:
    return json.dumps({"key": key, "doc": doc}).encode()


def open_state(settings) -> StateStore:  # settings: pipeline.settings.Settings
    """SQLite under AML_TRIGGER_HOME for folder storage, else the storage account
    (by connection string or by identity: pipeline.blob_storage.account_service_client)."""
    if settings.storage_kind == "folder":
        from pipeline.storage import refuse_folder_storage_in_azure

        refuse_folder_storage_in_azure(settings)
        return SqliteState(Path(settings.home) / "ledger.db")
    from pipeline.blob_storage import account_service_client

    return BlobState(account_service_client(settings))
