"""Helpers for tests that run TriggerServices in several processes at once: a
backend at the Submitter seam that every process shares (one SQLite file), and
the worker each process runs. Kept out of test modules so that processes started
with `spawn` can import them."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from pipeline.runs import RunRecord, rfc3339
from pipeline.submitter import RunNotFound


class SharedBackend:
    """Runs in one SQLite file. Every submission counts the runs active at that
    moment in the same transaction, and keeps the highest count seen: what the
    concurrency limit must bound, observed by the backend itself."""

    backend = "local"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with self._tx() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, key TEXT, "
                "status TEXT, created_at TEXT, seq INTEGER, request TEXT, submissions INTEGER)"
            )
            db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER)")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('max_active', 0), ('seq', 0)")

    @contextmanager
    def _tx(self):
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def submit(self, request, *, run_id, trigger, idempotency_key=None) -> RunRecord:
        with self._tx() as db:
            found = db.execute("SELECT 1 FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if found:
                db.execute("UPDATE runs SET submissions=submissions+1 WHERE run_id=?", (run_id,))
            else:
                db.execute("UPDATE meta SET value=value+1 WHERE name='seq'")
                (seq,) = db.execute("SELECT value FROM meta WHERE name='seq'").fetchone()
                db.execute(
                    "INSERT INTO runs VALUES (?, ?, 'running', ?, ?, ?, 1)",
                    (run_id, idempotency_key, rfc3339(time.time()), seq,
                     json.dumps(request.model_dump(mode="json"))),
                )  # fmt: skip
                (active,) = db.execute(
                    "SELECT COUNT(*) FROM runs WHERE status='running'"
                ).fetchone()
                db.execute("UPDATE meta SET value=MAX(value, ?) WHERE name='max_active'", (active,))
        # The answer takes a while to come back, as over a network: meanwhile the run
        # exists (and may end) while the trigger has not yet recorded its submission.
        time.sleep(0.02)
        return self.get(run_id)

    def get(self, run_id: str) -> RunRecord:
        with self._tx() as db:
            row = db.execute(
                "SELECT run_id, key, status, created_at, request FROM runs WHERE run_id=?",
                (run_id,),
            ).fetchone()
        if row is None:
            raise RunNotFound(run_id)
        return _record(row)

    def list_runs(self, limit: int = 20) -> list[RunRecord]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT run_id, key, status, created_at, request FROM runs "
                "ORDER BY seq DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [_record(r) for r in rows]

    def cancel(self, run_id: str) -> RunRecord:
        with self._tx() as db:
            db.execute("UPDATE runs SET status='canceled' WHERE run_id=?", (run_id,))
        return self.get(run_id)

    def describe(self, request, *, run_id, trigger) -> dict:
        return {"run_id": run_id}

    # --- what the test reads, and the backend ending runs -----------------------------
    def finish_one(self) -> str | None:
        """End the oldest running run, as the backend would; its id, or None."""
        with self._tx() as db:
            row = db.execute(
                "SELECT run_id FROM runs WHERE status='running' ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE runs SET status='completed' WHERE run_id=?", row)
        return row[0]

    def max_active(self) -> int:
        with self._tx() as db:
            return db.execute("SELECT value FROM meta WHERE name='max_active'").fetchone()[0]

    def runs(self) -> dict[str, tuple[str, str, int]]:
        """key -> (status, run id, submissions that reached the backend)."""
        with self._tx() as db:
            rows = db.execute("SELECT key, status, run_id, submissions FROM runs").fetchall()
        return {key: (status, run_id, n) for key, status, run_id, n in rows}

    def started_order(self) -> list[str]:
        with self._tx() as db:
            return [r[0] for r in db.execute("SELECT key FROM runs ORDER BY seq").fetchall()]


def _record(row) -> RunRecord:
    run_id, key, status, created_at, request = row
    return RunRecord(
        run_id=run_id,
        status=status,
        created_at=created_at,
        trigger="http",
        idempotency_key=key,
        request=json.loads(request),
    )


def build_service(config: dict):
    """A TriggerService on the shared state and backend named in `config`."""
    from pipeline.settings import Settings
    from pipeline.storage import FolderStorage
    from triggers.drops import DropBook
    from triggers.ledger import RunLedger
    from triggers.notify import CallbackNotifier
    from triggers.service import TriggerService
    from triggers.state import BlobState, SqliteState

    home = Path(config["home"])
    settings = Settings.from_env(
        {
            "AML_TRIGGER_HOME": str(home),
            "MAX_CONCURRENT_RUNS": str(config["limit"]),
            "CONCURRENCY_POLICY": config["policy"],
        }
    )
    if config.get("azurite"):
        from pipeline.blob_storage import blob_service_client

        state = BlobState(blob_service_client(config["azurite"]), container=config["container"])
    else:
        state = SqliteState(home / "ledger.db")
    return TriggerService(
        settings,
        SharedBackend(config["backend"]),
        RunLedger(state),
        DropBook(state),
        FolderStorage(home / "storage"),
        CallbackNotifier(local=True, sleep=lambda s: None),
    )


def client_process(config: dict, indexes: list[int], start, submitted, accepted, results):
    """One process of the app: POST its requests at once (a thread each, all
    processes released together), then play its part as runs end: the backend ends
    one run, this process gets the run-ended event. Until every accepted run ran.
    Puts its outcomes on `results`, or the traceback that stopped it."""
    import traceback

    try:
        results.put(_client(config, indexes, start, submitted, accepted))
    except BaseException:
        start.abort()  # the other processes must not wait for this one
        submitted.abort()
        results.put({"process failed": traceback.format_exc()})


def _client(config: dict, indexes: list[int], start, submitted, accepted) -> dict[str, str]:
    from triggers.events import HttpSubmission
    from triggers.monitor import RunMonitor, RunNotRecordedYet
    from triggers.outcomes import Accepted, Skipped

    service = build_service(config)
    backend: SharedBackend = service.submitter
    outcomes: dict[str, str] = {}

    def post(i: int) -> None:
        body = json.dumps({"reason": f"request {i}"}).encode()
        submission = HttpSubmission(
            body=body, idempotency_key=f"k{i}", content_type="application/json"
        )
        try:
            outcome = service.submit_http(submission)
        except Exception as exc:  # reported: a lost request fails the test
            outcomes[f"http:k{i}"] = f"error {type(exc).__name__}: {exc}"
            return
        kind = {Accepted: "accepted", Skipped: "skipped"}.get(type(outcome), repr(outcome))
        outcomes[f"http:k{i}"] = kind

    start.wait(timeout=120)
    threads = [threading.Thread(target=post, args=(i,)) for i in indexes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with accepted.get_lock():
        accepted.value += sum(v == "accepted" for v in outcomes.values())
    submitted.wait(timeout=300)  # every process has posted: `accepted` is the total

    monitor = RunMonitor(service)
    redeliver: list[str] = []  # events whose delivery failed, as Event Grid retries them
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = sum(status == "completed" for status, _, _ in backend.runs().values())
        if done >= accepted.value and not redeliver:
            break
        run_id = redeliver.pop(0) if redeliver else backend.finish_one()
        if run_id is None:
            time.sleep(0.05)  # another process is between a run's end and the next start
            continue
        try:
            monitor.run_ended(run_id)
        except RunNotRecordedYet:
            redeliver.append(run_id)  # it ended before its submission was recorded
            time.sleep(0.05)
    return outcomes
