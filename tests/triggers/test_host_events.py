"""The local host's timers and blob watching, driving function_app's real handlers."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

import function_app
from pipeline.settings import Settings
from pipeline.storage import FolderStorage
from triggers import runtime
from triggers.host.blob_watcher import BlobWatcher
from triggers.host.functions import BlobFunction, index_app, route_pattern
from triggers.host.local_host import LocalHost, app_settings
from triggers.host.timers import TimerRunner

DAY = datetime(2036, 11, 24, tzinfo=UTC)


class WallClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _index(home, **env):
    settings = Settings.from_env({"AML_TRIGGER_HOME": str(home)})
    return index_app(function_app.app, app_settings(settings, env))


def _retrain_timer(home, **env):
    return tuple(t for t in _index(home, **env).timers if t.name == "scheduled_retrain")


# --- timers -------------------------------------------------------------------------------
def test_missed_ticks_after_downtime_run_once_past_due(home, installed, fake_submitter):
    timers = _retrain_timer(home)
    status_dir = home / "host" / "timers"
    clock = WallClock(DAY.replace(hour=1))
    assert TimerRunner(timers, status_dir, clock=clock).start_up() == []

    # Down for two and a half days: three 02:00 occurrences missed.
    clock.now = DAY + timedelta(days=2, hours=9)
    runner = TimerRunner(timers, status_dir, clock=clock)
    [fired] = runner.start_up()
    assert fired.past_due and fired.error is None
    assert fired.scheduled == DAY.replace(hour=2)  # the first occurrence missed
    assert runner.run_due() == []
    # (The handler keys the run by the occurrence at the real time of the call;
    # test_function_app checks that derivation.)
    assert len(fake_submitter.submissions) == 1

    # Restarting again right away fires nothing: the monitor recorded the tick.
    assert TimerRunner(timers, status_dir, clock=clock).start_up() == []
    status = json.loads((status_dir / "scheduled_retrain.json").read_text())
    assert status["next"] == "2036-11-27T02:00:00+00:00"


def test_timer_fires_on_schedule_and_not_before(home, installed, fake_submitter):
    clock = WallClock(DAY.replace(hour=1, minute=59, second=58))
    runner = TimerRunner(_retrain_timer(home), home / "host" / "timers", clock=clock)
    runner.start_up()
    assert runner.run_due() == []
    clock.now = DAY.replace(hour=2)
    [fired] = runner.run_due()
    assert not fired.past_due and fired.scheduled == DAY.replace(hour=2)
    assert runner.run_due() == []
    assert len(fake_submitter.submissions) == 1


def test_disabled_timer_is_not_run(home, installed, fake_submitter):
    index = _index(home, **{"AzureWebJobs.scheduled_retrain.Disabled": "true"})
    assert "scheduled_retrain" in index.disabled
    assert "scheduled_retrain" not in {t.name for t in index.timers}
    clock = WallClock(DAY.replace(hour=1))
    runner = TimerRunner(index.timers, home / "host" / "timers", clock=clock)
    runner.start_up()
    clock.now = DAY + timedelta(days=3)
    runner.run_due()
    assert fake_submitter.submissions == []


def test_schedule_comes_from_the_app_setting(home):
    [timer] = _retrain_timer(home, TRAIN_SCHEDULE="0 30 4 * * MON")
    assert timer.schedule.text == "0 30 4 * * MON"


# --- blobs --------------------------------------------------------------------------------
class CountingStorage(FolderStorage):
    def __init__(self, root) -> None:
        super().__init__(root)
        self.reads = 0

    def get_blob(self, container, name):
        self.reads += 1
        return super().get_blob(container, name)


def test_drop_of_200_files_through_the_watcher_is_one_run(
    home, installed, put, fake_submitter, clock
):
    storage = CountingStorage(home / "storage")
    watcher = BlobWatcher(_index(home).blobs, storage, home / "host")
    for i in range(200):
        put(f"drops/d1/part-{i:03}.csv")
    assert len(watcher.scan().fired) == 200
    assert watcher.scan().fired == []
    clock.advance(31)
    installed.sweep_drops()
    assert len(fake_submitter.submissions) == 1

    # A new folder: only it is read, not the 200 files of the quiet one (one read by
    # the scan, one by the function's get_blob_properties on the client it is bound).
    storage.reads = 0
    put("drops/d2/part-000.csv")
    assert watcher.scan().fired == ["drops/d2/part-000.csv"]
    assert storage.reads == 2
    watcher.close()

    # Receipts survive a restart: nothing fires twice.
    again = BlobWatcher(_index(home).blobs, storage, home / "host")
    assert again.scan().fired == []
    put("drops/d1/part-007.csv", b"a,b\n3,4\n")  # rewritten: a new ETag fires again
    assert again.scan().fired == ["drops/d1/part-007.csv"]
    again.close()


def test_failing_blob_is_tried_five_times_then_poisoned(home):
    calls = []

    def failing(stream):
        calls.append(stream.name)
        raise RuntimeError("cannot handle")

    function = BlobFunction(
        "failing", "incoming", route_pattern("{name}", catch_all=True), "AzureWebJobsStorage",
        "LogsAndContainerScan", failing,
    )  # fmt: skip
    storage = FolderStorage(home / "storage")
    storage.put_blob("incoming", "drops/p/part.csv", b"x")
    watcher = BlobWatcher((function,), storage, home / "host")
    reports = [watcher.scan() for _ in range(7)]
    assert len(calls) == 5
    assert reports[4].poisoned == ["drops/p/part.csv"]
    [line] = (home / "host" / "blob-poison.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["name"] == "drops/p/part.csv" and record["attempts"] == 5
    assert "cannot handle" in record["error"]
    watcher.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serving_host_turns_a_dropped_folder_with_marker_into_one_run(
    home, service, put, fake_submitter
):
    settings = Settings.from_env({"AML_TRIGGER_HOME": str(home)})
    host = LocalHost(
        function_app.app, settings, port=_free_port(), key="k", run_timers=False,
        blob_interval_s=0.05,
    )  # fmt: skip
    for i in range(5):
        put(f"drops/live/part-{i}.csv")
    put("drops/live/_SUCCESS", b"")
    host.start(service=service)
    try:
        deadline = time.monotonic() + 20
        while not fake_submitter.submissions and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # later scans must not add a run
    finally:
        host.stop()
        runtime.reset()
    assert len(fake_submitter.submissions) == 1
    assert fake_submitter.get(fake_submitter.submissions[0]).request["data"] == "drops/live/"


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_serve_prints_a_generated_key_once_and_stops_cleanly_on_a_signal(home, signal_name):
    import os
    import signal
    import subprocess
    import sys

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "AML_TRIGGER_FUNCTION_KEY"}
    env["AML_TRIGGER_HOME"] = str(home)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--no-timers"],
        cwd=str(Path(function_app.__file__).parent),
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        for line in proc.stderr:  # "serving ..." comes once the signal handlers are set
            lines.append(line)
            if line.startswith("serving "):
                break
        key = next(x for x in lines if x.startswith("function key")).rsplit(": ", 1)[1].strip()
        base = f"http://127.0.0.1:{port}/api/runs"
        assert requests.get(base, params={"code": key}, timeout=10).status_code == 200
        assert requests.get(base, params={"code": "nope"}, timeout=10).status_code == 401
        proc.send_signal(getattr(signal, signal_name))
        _, rest = proc.communicate(timeout=20)
        err = "".join(lines) + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped" in err
    assert err.count(key) == 1  # printed once; never in the request log
    assert "GET /api/runs -> 200" in err


class Crash(BaseException):
    """The process dies between the ledger claim and the submission."""


def test_host_start_submits_claims_left_by_a_dead_process(
    home, make_service, fake_submitter, new_submitter
):
    from triggers.events import HttpSubmission

    fake_submitter.fail_with = Crash()
    with pytest.raises(Crash):
        make_service().submit_http(HttpSubmission(body=b"{}", idempotency_key="lost-1"))

    backend = new_submitter()
    settings = Settings.from_env({"AML_TRIGGER_HOME": str(home)})
    host = LocalHost(function_app.app, settings, port=_free_port(), key="k",
                     run_timers=False, watch_blobs=False)  # fmt: skip
    host.start(service=make_service(submitter=backend))
    host.stop()
    runtime.reset()
    assert len(backend.submissions) == 1
    assert backend.get(backend.submissions[0]).idempotency_key == "http:lost-1"


def test_serving_host_starts_a_drop_by_its_delayed_message_and_settles_it_by_its_event(
    home, put, fake_submitter
):
    """No timer runs here: the queue trigger closes the window, the Event Grid trigger
    hears the end."""
    from pipeline.run_events import publish_run_ended

    settings = Settings.from_env({"AML_TRIGGER_HOME": str(home), "BLOB_QUIET_SECONDS": "1"})
    service = runtime.build_service(settings, submitter=fake_submitter)  # the real clock
    host = LocalHost(
        function_app.app, settings, port=_free_port(), key="k", run_timers=False,
        blob_interval_s=0.05,
    )  # fmt: skip
    assert host.timers is None and host.queues is not None and host.events is not None
    for i in range(3):
        put(f"drops/evented/part-{i}.csv")
    host.start(service=service)
    try:
        deadline = time.monotonic() + 30
        while not fake_submitter.submissions and time.monotonic() < deadline:
            time.sleep(0.05)
        [run_id] = fake_submitter.submissions
        fake_submitter.finish(run_id, "completed")
        publish_run_ended(home, fake_submitter.get(run_id), experiment="aml-trigger")
        while service.ledger.open_entries() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        host.stop()
        runtime.reset()
    assert fake_submitter.get(run_id).request["data"] == "drops/evented/"
    assert service.ledger.open_entries() == []  # settled by the event, not a tick
