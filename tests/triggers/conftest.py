"""Fixtures for the trigger service: a fake Submitter at the seam, a settable clock,
and a TriggerService on a temporary AML_TRIGGER_HOME."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipeline.request import TrainingRequest
from pipeline.runs import RunRecord
from pipeline.settings import Settings
from pipeline.storage import FolderStorage
from pipeline.submitter import RunNotFound
from triggers import runtime
from triggers.drops import DropBook
from triggers.ledger import RunLedger
from triggers.notify import CallbackNotifier
from triggers.queues import DROP_QUEUE, FolderQueue
from triggers.service import TriggerService
from triggers.state import SqliteState


class FakeSubmitter:
    """Keeps runs in memory; submitting an existing run id returns that run, as the
    Submitter protocol requires. `fail_with` makes the next submissions raise."""

    backend = "local"

    def __init__(self) -> None:
        self.runs: dict[str, RunRecord] = {}
        self.submissions: list[str] = []  # every call that created a run
        self.calls = 0
        self.fail_with: BaseException | None = None
        self._lock = threading.Lock()

    def submit(self, request: TrainingRequest, *, run_id, trigger, idempotency_key=None):
        with self._lock:
            self.calls += 1
            if self.fail_with is not None:
                raise self.fail_with
            if run_id in self.runs:
                return self.runs[run_id]
            record = RunRecord(
                run_id=run_id,
                status="queued",
                created_at=datetime.now(UTC).isoformat(),
                trigger=trigger,
                idempotency_key=idempotency_key,
                request=request.model_dump(mode="json"),
            )
            self.runs[run_id] = record
            self.submissions.append(run_id)
            return record

    def get(self, run_id: str) -> RunRecord:
        try:
            return self.runs[run_id]
        except KeyError:
            raise RunNotFound(run_id) from None

    def list_runs(self, limit: int = 20) -> list[RunRecord]:
        return sorted(self.runs.values(), key=lambda r: r.created_at, reverse=True)[:limit]

    def cancel(self, run_id: str) -> RunRecord:
        self.finish(run_id, "canceled")
        return self.get(run_id)

    def describe(self, request, *, run_id, trigger) -> dict:
        # The local submitter's shape, operator details (paths, commands) included.
        return {
            "backend": "local",
            "run_id": run_id,
            "pipeline": "fake",
            "experiment": request.experiment,
            "inputs": {"training_data": f"/srv/fake-home/storage/incoming/{request.data}"},
            "steps": [
                {"name": "prep", "component": "prep", "depends_on": [],
                 "command": ["python", "-m", "steps.prep"], "log": "/srv/fake-home/prep.log"},
            ],
        }  # fmt: skip

    def finish(self, run_id: str, status: str = "completed", **fields) -> None:
        record = self.get(run_id)
        self.runs[run_id] = record.model_copy(update={"status": status, **fields})


class Clock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_submitter() -> FakeSubmitter:
    return FakeSubmitter()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def drop_queue(home: Path, clock: Clock) -> FolderQueue:
    """The folder queue of drops' delayed messages, on the test clock."""
    return FolderQueue(home / "queues", DROP_QUEUE, clock=clock)


@pytest.fixture
def make_service(home: Path, fake_submitter: FakeSubmitter, clock: Clock, drop_queue):
    """make_service(**env) -> TriggerService on `home`, the fake submitter and clock,
    sending drops' delayed messages to `drop_queue`."""

    def make(submitter=None, notifier=None, **env: str) -> TriggerService:
        env = {"AML_TRIGGER_HOME": str(home), "MAX_CONCURRENT_RUNS": "8", **env}
        settings = Settings.from_env(env)
        state = SqliteState(home / "ledger.db")
        return TriggerService(
            settings,
            submitter or fake_submitter,
            RunLedger(state, clock=clock),
            DropBook(state),
            FolderStorage(home / "storage"),
            notifier or CallbackNotifier(local=True, sleep=lambda s: None),
            clock=clock,
            drop_queue=drop_queue,
        )

    return make


@pytest.fixture
def start_host(home: Path):
    """start_host(service, key=..., **options) -> the function app on a LocalHost at a
    free loopback port, serving HTTP only (no blob watcher, no timers) with `service`
    (options: more LocalHost arguments, e.g. http_limits); every host started is
    stopped, and the runtime reset, after the test."""
    import function_app
    from tests.conftest import free_port
    from triggers.host.local_host import LocalHost

    started: list[LocalHost] = []

    def start(service: TriggerService, *, key: str, **options: Any) -> LocalHost:
        settings = Settings.from_env({"AML_TRIGGER_HOME": str(home)})
        local = LocalHost(function_app.app, settings, port=free_port(), key=key,
                          watch_blobs=False, run_timers=False, **options)  # fmt: skip
        local.start(service=service)
        started.append(local)
        return local

    yield start
    for local in started:
        local.stop()
    runtime.reset()


class CallbackServer:
    """A real HTTP server on loopback that keeps every callback (path and JSON body) and
    answers POSTs with scripted statuses, 200 once the script runs out."""

    def __init__(self, statuses: Iterable[int] = ()) -> None:
        self.statuses = list(statuses)
        self.received: list[tuple[str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                outer.received.append((self.path, json.loads(self.rfile.read(length))))
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}
        )
        self.thread.start()

    @property
    def bodies(self) -> list[dict]:
        return [body for _, body in self.received]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def callback_server():
    """callback_server(statuses=()) -> a started CallbackServer, closed after the test."""
    servers: list[CallbackServer] = []

    def start(statuses: Iterable[int] = ()) -> CallbackServer:
        servers.append(CallbackServer(statuses))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def service(make_service) -> TriggerService:
    return make_service()


@pytest.fixture
def installed(service):
    """The service installed as the one function_app's handlers use."""
    runtime.install(service)
    yield service
    runtime.reset()


@pytest.fixture
def put(home: Path):
    """put(name, data=...) writes a blob into the folder storage's incoming container."""

    def write(name: str, data: bytes = b"a,b\n1,2\n", container: str = "incoming"):
        return FolderStorage(home / "storage").put_blob(container, name, data)

    return write


@pytest.fixture
def landed(put, home: Path):
    """landed(name, data=...) writes a blob and returns what the host binds for it
    (a BlobClient-like reference on folder storage)."""

    def land(name: str, data: bytes = b"a,b\n1,2\n", container: str = "incoming"):
        put(name, data, container)
        return FolderStorage(home / "storage").blob_client(container, name)

    return land


@pytest.fixture
def new_submitter():
    """A factory of fresh FakeSubmitters (e.g. for the process after a restart)."""
    return FakeSubmitter
