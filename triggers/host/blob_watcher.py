"""The blob trigger, the way the host runs it: watch the container, call the
function once per blob version, retry failures, then give up with a poison record.

- Receipts per function + blob name + ETag (the host keeps them in
  `azure-webjobs-hosts`; here `$AML_TRIGGER_HOME/host/blob-receipts.db`) make a
  blob fire once, across restarts; a rewrite (new ETag) fires again.
- A failing blob is tried up to 5 times (host.json `poisonBlobThreshold`), then a
  line goes to `host/blob-poison.jsonl` (the `webjobs-blobtrigger-poison` queue).
- A function typed `blob.BlobClient` (a deferred SDK-type binding) gets what Azure
  gives it: a BlobClient for the blob (azure.storage.blob's on Azurite/Azure,
  pipeline.storage.FolderBlobClient on folder storage), a reference and no bytes.
  A function typed InputStream gets one with the name, URI and properties and,
  unlike Azure, no content: the service needs where the data is, not the bytes.
- Cost per scan: for folder storage only folders whose modification time changed
  are read (adding or replacing a file changes its folder's mtime), so a quiet
  container of any size costs one stat per folder; a full pass every few minutes
  catches files rewritten in place. Blob storage has no such signal, so a scan
  lists the container (under BLOB_PREFIX) and compares against receipts held in
  memory. Listing is done folder by folder ('/' delimiter), and a leaf folder whose
  blobs have all fired and that is finished (it holds the drop marker, or nothing
  in it changed for SETTLE_AFTER_S) is not listed again until the next full pass:
  a scan then costs one entry per folder, not one per blob, so old drops do not
  slow the detection of new ones. Blobs kept at the container's root (no folders)
  are listed on every scan. In Azure the EventGrid source replaces scanning.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from azure.functions.blob import InputStream

from pipeline.storage import BlobInfo, Storage
from triggers.host.functions import BlobFunction

log = logging.getLogger("aml_trigger.host.blobs")

POISON_THRESHOLD = 5
FULL_SCAN_EVERY_S = 300.0
SETTLE_AFTER_S = 600.0


class Receipts:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # No fsync per receipt: after a power cut a few blobs may fire again, which
        # the ledger absorbs (same blob, same key, same run).
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS receipts (function TEXT, name TEXT, etag TEXT, "
            "status TEXT, attempts INTEGER, error TEXT, updated_at REAL, "
            "PRIMARY KEY (function, name, etag))"
        )
        self._lock = threading.Lock()
        rows = self._conn.execute(
            "SELECT function, name, etag, status, attempts FROM receipts"
        ).fetchall()
        self._final = {(f, n, e) for f, n, e, s, _ in rows if s in ("done", "poisoned")}
        self._attempts = {(f, n, e): a for f, n, e, s, a in rows if s == "failed"}

    def settled(self, function: str, name: str, etag: str) -> bool:
        return (function, name, etag) in self._final

    def pending_failures(self) -> list[tuple[str, str, str]]:
        return list(self._attempts)

    def succeeded(self, function: str, name: str, etag: str) -> None:
        self._write(function, name, etag, "done", self._attempts.pop((function, name, etag), 0))
        self._final.add((function, name, etag))

    def failed(self, function: str, name: str, etag: str, error: str) -> int:
        attempts = self._attempts.get((function, name, etag), 0) + 1
        self._attempts[(function, name, etag)] = attempts
        self._write(function, name, etag, "failed", attempts, error)
        return attempts

    def poisoned(self, function: str, name: str, etag: str, error: str) -> None:
        attempts = self._attempts.pop((function, name, etag), POISON_THRESHOLD)
        self._write(function, name, etag, "poisoned", attempts, error)
        self._final.add((function, name, etag))

    def _write(self, function, name, etag, status, attempts, error=None) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO receipts VALUES (?, ?, ?, ?, ?, ?, ?)",
                (function, name, etag, status, attempts, error, time.time()),
            )

    def close(self) -> None:
        self._conn.close()


@dataclass
class ScanReport:
    fired: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    poisoned: list[str] = field(default_factory=list)


class BlobWatcher:
    def __init__(
        self,
        functions: tuple[BlobFunction, ...],
        storage: Storage,
        state_dir: Path,
        *,
        threshold: int = POISON_THRESHOLD,
        full_scan_every_s: float = FULL_SCAN_EVERY_S,
        prefix: str = "",
        marker_name: str | None = None,
        settle_after_s: float = SETTLE_AFTER_S,
    ) -> None:
        self.functions = functions
        self.storage = storage
        self.state_dir = Path(state_dir)
        self.receipts = Receipts(self.state_dir / "blob-receipts.db")
        self.poison_path = self.state_dir / "blob-poison.jsonl"
        self.threshold = threshold
        self.full_scan_every_s = full_scan_every_s
        # Blob listings are limited to this prefix (BLOB_PREFIX): blobs outside it
        # would be ignored by the service anyway.
        self.prefix = prefix
        self._dir_mtimes: dict[Path, int] = {}
        self._subdirs: dict[Path, list[Path]] = {}
        self._last_full = 0.0
        # Blob storage: leaf folders known to be finished (see the module docstring).
        self.marker_name = marker_name
        self.settle_after_s = settle_after_s
        self._settled_folders: set[tuple[str, str]] = set()

    def scan(self) -> ScanReport:
        report = ScanReport()
        full = time.monotonic() - self._last_full >= self.full_scan_every_s
        if full:
            self._last_full = time.monotonic()
        for container in sorted({f.container for f in self.functions}):
            for blob in self._changed(container, full):
                for function in self.functions:
                    if function.container == container:
                        self._offer(function, blob, report)
        self._retry_failures(report)
        return report

    def run_until(self, stop: threading.Event, interval_s: float = 2.0) -> None:
        while not stop.is_set():
            try:
                self.scan()
            except Exception:  # storage down (Azurite stopped): try again next interval
                log.exception("blob scan failed")
            stop.wait(interval_s)

    def close(self) -> None:
        self.receipts.close()

    # --- finding new blob versions --------------------------------------------------
    def _changed(self, container: str, full: bool) -> Iterator[BlobInfo]:
        root = getattr(self.storage, "root", None)
        if self.storage.kind != "folder" or root is None:
            if hasattr(self.storage, "walk"):
                yield from self._walk_folders(container, full)
            else:
                yield from self.storage.list_blobs(container, self.prefix)
            return
        base = Path(root) / container
        if not base.is_dir():
            return
        stack = [base]
        while stack:
            folder = stack.pop()
            try:
                mtime = folder.stat().st_mtime_ns
                changed = full or self._dir_mtimes.get(folder) != mtime
                # An unchanged folder has the same entries: reuse its subfolders.
                entries = list(os.scandir(folder)) if changed else None
            except FileNotFoundError:
                continue
            self._dir_mtimes[folder] = mtime
            if entries is None:
                stack.extend(self._subdirs.get(folder, ()))
                continue
            subdirs = []
            for item in sorted(entries, key=lambda e: e.name):
                if item.is_dir(follow_symlinks=False):
                    subdirs.append(Path(item.path))
                elif item.is_file(follow_symlinks=False):
                    name = Path(item.path).relative_to(base).as_posix()
                    info = self.storage.get_blob(container, name)
                    if info is not None:
                        yield info
            self._subdirs[folder] = subdirs
            stack.extend(subdirs)

    def _walk_folders(self, container: str, full: bool) -> Iterator[BlobInfo]:
        if full:
            self._settled_folders = {f for f in self._settled_folders if f[0] != container}
        # A prefix that is not a whole folder ("drops/2026") is listed as given.
        stack = [self.prefix]
        while stack:
            folder = stack.pop()
            if (container, folder) in self._settled_folders:
                continue
            blobs, subfolders = self.storage.walk(container, folder)
            stack.extend(reversed(subfolders))
            yield from blobs  # the caller offers each before the generator resumes
            if folder != self.prefix and not subfolders and self._finished(container, blobs):
                self._settled_folders.add((container, folder))

    def _finished(self, container: str, blobs: list[BlobInfo]) -> bool:
        """Every blob fired (or is not for any function), and the folder is complete:
        it holds the marker, or nothing in it changed for settle_after_s."""
        if not blobs:
            return False
        for blob in blobs:
            for function in self.functions:
                if (
                    function.container == container
                    and function.pattern.fullmatch(blob.name)
                    and not self.receipts.settled(function.name, blob.name, blob.etag)
                ):
                    return False
        marked = self.marker_name is not None and any(
            b.name.rsplit("/", 1)[-1] == self.marker_name for b in blobs
        )
        newest = max(b.last_modified for b in blobs)
        return marked or time.time() - newest >= self.settle_after_s

    # --- calling the function -------------------------------------------------------
    def _offer(self, function: BlobFunction, blob: BlobInfo, report: ScanReport) -> None:
        if not function.pattern.fullmatch(blob.name):
            return
        if self.receipts.settled(function.name, blob.name, blob.etag):
            return
        self._invoke(function, blob, report)

    def _binding_value(self, function: BlobFunction, blob: BlobInfo):
        if function.deferred:
            return self.storage.blob_client(blob.container, blob.name)
        modified = datetime.fromtimestamp(blob.last_modified, UTC).isoformat()
        return InputStream(
            data=b"",
            name=f"{blob.container}/{blob.name}",
            uri=self.storage.uri(blob.container, blob.name),
            length=blob.size,
            blob_properties={"ETag": blob.etag, "Length": blob.size, "LastModified": modified},
        )

    def _invoke(self, function: BlobFunction, blob: BlobInfo, report: ScanReport) -> None:
        try:
            function.call(self._binding_value(function, blob))
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.warning("blob function %s failed on %s: %s", function.name, blob.name, error)
            attempts = self.receipts.failed(function.name, blob.name, blob.etag, error)
            if attempts >= self.threshold:
                self._poison(function, blob, attempts, error)
                report.poisoned.append(blob.name)
            else:
                report.failed.append(blob.name)
            return
        self.receipts.succeeded(function.name, blob.name, blob.etag)
        report.fired.append(blob.name)

    def _retry_failures(self, report: ScanReport) -> None:
        # Folder scans skip unchanged folders, so failed blobs are retried from here.
        by_name = {f.name: f for f in self.functions}
        for function_name, name, etag in self.receipts.pending_failures():
            function = by_name.get(function_name)
            if function is None or name in report.failed or name in report.poisoned:
                continue
            blob = self.storage.get_blob(function.container, name)
            if blob is not None and blob.etag == etag:
                self._invoke(function, blob, report)

    def _poison(self, function: BlobFunction, blob: BlobInfo, attempts: int, error: str) -> None:
        self.receipts.poisoned(function.name, blob.name, blob.etag, error)
        record = {
            "function": function.name,
            "container": blob.container,
            "name": blob.name,
            "etag": blob.etag,
            "attempts": attempts,
            "error": error,
            "at": datetime.now(UTC).isoformat(),
        }
        with open(self.poison_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        log.error("blob %s poisoned after %d attempts: %s", blob.name, attempts, error)
