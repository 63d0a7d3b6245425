"""Local run records: one SQLite file, `$AML_TRIGGER_HOME/runs.db`, shared by the
submitting process, the detached workers and the CLI.

WAL mode and short transactions let several processes read and write at once;
claiming a queued run is one `BEGIN IMMEDIATE` transaction so two dispatchers never
start the same run. Each run also has a folder `runs/<run_id>/` with
`outputs/<node>/<output>/` and `logs/<node>.log`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.runs import RunRecord, StepRecord
from pipeline.submitter import RunNotFound

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    trigger TEXT NOT NULL,
    idempotency_key TEXT,
    request TEXT,
    inputs TEXT NOT NULL,
    job TEXT NOT NULL,
    results TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    worker_pid INTEGER,
    worker_identity TEXT,
    heartbeat REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    started_at TEXT,
    finished_at TEXT,
    duration_s REAL,
    exit_code INTEGER,
    error TEXT,
    log_path TEXT,
    peak_rss_mb REAL,
    pid INTEGER,
    PRIMARY KEY (run_id, name)
);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, seq);
"""

_STEP_FIELDS = {
    "status",
    "started_at",
    "finished_at",
    "duration_s",
    "exit_code",
    "error",
    "log_path",
    "peak_rss_mb",
    "pid",
}


@dataclass(frozen=True, slots=True)
class WorkerState:
    """Who executes a running run, as the store last heard: the process (pid plus
    its start time, so a recycled pid is not mistaken for it) and its heartbeat."""

    pid: int | None
    identity: str | None
    heartbeat: float | None
    cancel_requested: bool


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RunStore:
    """Runs and steps of the local backend. Every method is one short transaction."""

    def __init__(self, home: Path | str) -> None:
        self.home = Path(home).resolve()
        self.home.mkdir(parents=True, exist_ok=True)
        self.path = self.home / "runs.db"
        with self._connect() as db:
            db.executescript(_SCHEMA)
            columns = {row["name"] for row in db.execute("PRAGMA table_info(runs)")}
            if "worker_identity" not in columns:  # a runs.db from before this column
                db.execute("ALTER TABLE runs ADD COLUMN worker_identity TEXT")

    # -- folders ---------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return self.home / "runs" / run_id

    def output_dir(self, run_id: str, node: str, output: str) -> Path:
        return self.run_dir(run_id) / "outputs" / node / output

    def log_path(self, run_id: str, node: str) -> Path:
        return self.run_dir(run_id) / "logs" / f"{node}.log"

    # -- connection ------------------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- runs ------------------------------------------------------------------
    def create_run(
        self,
        run_id: str,
        *,
        trigger: str,
        idempotency_key: str | None,
        request: dict[str, Any] | None,
        inputs: dict[str, Any],
        job: dict[str, Any],
        steps: Iterable[str],
        status: str = "queued",
    ) -> tuple[RunRecord, bool]:
        """Record a new run; an existing `run_id` is returned unchanged instead.
        Returns (record, created)."""
        with self._write() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO runs (run_id, status, created_at, trigger, "
                "idempotency_key, request, inputs, job) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    status,
                    utc_now(),
                    trigger,
                    idempotency_key,
                    json.dumps(request) if request is not None else None,
                    json.dumps(inputs),
                    json.dumps(job),
                ),
            )
            created = cur.rowcount == 1
            if created:
                db.executemany(
                    "INSERT INTO steps (run_id, position, name) VALUES (?, ?, ?)",
                    [(run_id, i, name) for i, name in enumerate(steps)],
                )
        return self.get(run_id), created

    def get(self, run_id: str) -> RunRecord:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(run_id)
            steps = db.execute(
                "SELECT * FROM steps WHERE run_id = ? ORDER BY position", (run_id,)
            ).fetchall()
        return _record(row, steps)

    def list_runs(self, limit: int = 20, *, status: str | None = None) -> list[RunRecord]:
        with self._connect() as db:
            if status is None:
                rows = db.execute(
                    "SELECT * FROM runs ORDER BY seq DESC LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = db.execute(
                    "SELECT * FROM runs WHERE status = ? ORDER BY seq DESC LIMIT ?",
                    (status, limit),
                ).fetchall()
            ids = [r["run_id"] for r in rows]
            steps = db.execute(
                f"SELECT * FROM steps WHERE run_id IN ({','.join('?' * len(ids))}) "
                "ORDER BY run_id, position",
                ids,
            ).fetchall()
        by_run: dict[str, list[sqlite3.Row]] = {}
        for step in steps:
            by_run.setdefault(step["run_id"], []).append(step)
        return [_record(row, by_run.get(row["run_id"], [])) for row in rows]

    def job(self, run_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(inputs, job) as recorded at submission: what the worker executes."""
        with self._connect() as db:
            row = db.execute("SELECT inputs, job FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(run_id)
        return json.loads(row["inputs"]), json.loads(row["job"])

    def set_inputs(self, run_id: str, inputs: dict[str, Any]) -> None:
        with self._write() as db:
            db.execute("UPDATE runs SET inputs = ? WHERE run_id = ?", (json.dumps(inputs), run_id))

    def claim_next(self, max_running: int) -> str | None:
        """Move the oldest queued run to `running` if fewer than `max_running` runs
        are running. The caller then starts its worker."""
        with self._write() as db:
            running = db.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()
            if running[0] >= max_running:
                return None
            row = db.execute(
                "SELECT run_id FROM runs WHERE status = 'queued' ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE runs SET status = 'running', started_at = ?, heartbeat = ?, "
                "worker_pid = NULL, worker_identity = NULL WHERE run_id = ?",
                (utc_now(), time.time(), row["run_id"]),
            )
            return row["run_id"]

    def mark_running(self, run_id: str, *, pid: int, identity: str | None) -> bool:
        """The running run is executing in process `pid` (a worker, or the CLI in the
        foreground). False if the run is no longer running (canceled, or declared
        dead while its worker was starting)."""
        with self._write() as db:
            cur = db.execute(
                "UPDATE runs SET worker_pid = ?, worker_identity = ?, heartbeat = ?, "
                "started_at = coalesce(started_at, ?) WHERE run_id = ? AND status = 'running'",
                (pid, identity, time.time(), utc_now(), run_id),
            )
        return cur.rowcount == 1

    def heartbeat(self, run_id: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE runs SET heartbeat = ? WHERE run_id = ? AND status = 'running'",
                (time.time(), run_id),
            )

    def liveness(self, run_id: str) -> WorkerState:
        with self._connect() as db:
            row = db.execute(
                "SELECT worker_pid, worker_identity, heartbeat, cancel_requested FROM runs "
                "WHERE run_id = ?",
                (run_id,),
            ).fetchone()
        if row is None:
            raise RunNotFound(run_id)
        return _worker(row)

    def running_runs(self) -> list[tuple[str, WorkerState]]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT run_id, worker_pid, worker_identity, heartbeat, cancel_requested "
                "FROM runs WHERE status = 'running'"
            ).fetchall()
        return [(r["run_id"], _worker(r)) for r in rows]

    def request_cancel(self, run_id: str) -> str:
        """Flag the run for cancellation; a queued run is canceled at once. Returns
        the status before the request."""
        with self._write() as db:
            row = db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(run_id)
            status = row["status"]
            if status == "queued":
                now = utc_now()
                db.execute(
                    "UPDATE runs SET status = 'canceled', finished_at = ?, cancel_requested = 1, "
                    "error = 'canceled before it started' WHERE run_id = ?",
                    (now, run_id),
                )
                db.execute(
                    "UPDATE steps SET status = 'canceled' WHERE run_id = ? AND status = 'pending'",
                    (run_id,),
                )
            elif status == "running":
                db.execute("UPDATE runs SET cancel_requested = 1 WHERE run_id = ?", (run_id,))
        return status

    def finish_run(
        self,
        run_id: str,
        status: str,
        *,
        error: str | None = None,
        results: dict[str, Any] | None = None,
        only_if_running: bool = False,
    ) -> bool:
        """Put the run in a terminal state; steps still pending become skipped and
        steps still running take `status` too. False if `only_if_running` and the
        run was no longer running (someone else finished it)."""
        now = utc_now()
        with self._write() as db:
            guard = " AND status = 'running'" if only_if_running else ""
            cur = db.execute(
                "UPDATE runs SET status = ?, finished_at = ?, error = ?, results = ?"
                " , heartbeat = NULL WHERE run_id = ?" + guard,
                (status, now, error, json.dumps(results or {}), run_id),
            )
            if cur.rowcount == 0:
                return False
            db.execute(
                "UPDATE steps SET status = 'skipped' WHERE run_id = ? AND status = 'pending'",
                (run_id,),
            )
            db.execute(
                "UPDATE steps SET status = ?, finished_at = ?, error = coalesce(error, ?) "
                "WHERE run_id = ? AND status = 'running'",
                ("canceled" if status == "canceled" else "failed", now, error, run_id),
            )
        return True

    # -- steps -----------------------------------------------------------------
    def update_step(self, run_id: str, name: str, **fields: Any) -> None:
        unknown = set(fields) - _STEP_FIELDS
        if unknown:
            raise ValueError(f"unknown step field(s): {', '.join(sorted(unknown))}")
        assignments = ", ".join(f"{key} = ?" for key in fields)
        with self._write() as db:
            db.execute(
                f"UPDATE steps SET {assignments} WHERE run_id = ? AND name = ?",
                (*fields.values(), run_id, name),
            )

    def running_step_pids(self, run_id: str) -> list[int]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT pid FROM steps WHERE run_id = ? AND status = 'running' AND pid IS NOT NULL",
                (run_id,),
            ).fetchall()
        return [r["pid"] for r in rows]


def _worker(row: sqlite3.Row) -> WorkerState:
    return WorkerState(
        pid=row["worker_pid"],
        identity=row["worker_identity"],
        heartbeat=row["heartbeat"],
        cancel_requested=bool(row["cancel_requested"]),
    )


def _record(row: sqlite3.Row, steps: Iterable[sqlite3.Row]) -> RunRecord:
    results = json.loads(row["results"] or "{}")
    steps = list(steps)
    extra = dict(results.get("extra") or {})
    exit_codes = {s["name"]: s["exit_code"] for s in steps if s["exit_code"] is not None}
    if exit_codes:
        extra["exit_codes"] = exit_codes
    return RunRecord(
        run_id=row["run_id"],
        status=row["status"],
        backend="local",
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        trigger=row["trigger"],
        idempotency_key=row["idempotency_key"],
        steps=[
            StepRecord(
                name=s["name"],
                status=s["status"],
                started_at=s["started_at"],
                finished_at=s["finished_at"],
                duration_s=s["duration_s"],
                error=s["error"],
                log_path=s["log_path"],
                peak_rss_mb=s["peak_rss_mb"],
            )
            for s in steps
        ],
        metrics=results.get("metrics") or {},
        gate=results.get("gate"),
        model_version=results.get("model_version"),
        endpoint=results.get("endpoint"),
        error=row["error"],
        request=json.loads(row["request"]) if row["request"] else None,
        extra=extra,
    )
