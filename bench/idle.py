"""What an idle app costs, and how fast events are handled, before and after issue 9.

- timer executions per idle hour, counted from the schedules: "before" are the two
  housekeeping timers issue 9 removed (`sweep_drops` */10 s, `monitor_runs` */30 s),
  "after" the timers function_app registers now; the nightly TRAIN_SCHEDULE is left
  out of both (it runs whatever the app does).
- blob landed -> run submitted, beyond the quiet window (BLOB_QUIET_SECONDS=1 here):
  20 drops land at random moments of one 10 s period; "before" a sweep runs on the
  old 10 s schedule, "after" the drops' delayed messages are delivered by the local
  host's queue runner. Real time, the real service and LocalSubmitter (dispatcher
  paused, so no pipeline runs).
- run ended -> callback received: 20 runs end at random moments of one 30 s period;
  "before" the run monitor ticks on the old 30 s schedule, "after" the end-of-run
  events the local worker writes are delivered to `run_ended` by the host's Event
  Grid runner (1 s poll). A loopback HTTP server receives the callbacks.
- storage requests per accepted POST and per repeated POST, on Azurite: every HTTP
  request azure-core sends, counted from its per-call logging policy. Part 2 does
  not change the POST path, so before = after on this branch.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

from bench.blob_detect import _Azurite, _Recorder

OLD_TIMERS = {"sweep_drops": "*/10 * * * * *", "monitor_runs": "*/30 * * * * *"}
TRIALS = 20
T = TypeVar("T")


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.95 * (len(ordered) - 1))] if ordered else float("nan")


# --- timers -------------------------------------------------------------------------------
def timer_executions_per_hour() -> tuple[float, float]:
    import function_app
    from pipeline.settings import Settings
    from triggers.host.functions import index_app
    from triggers.host.local_host import app_settings
    from triggers.schedule import CronSchedule

    start = datetime(2036, 11, 24, tzinfo=UTC)
    end = start + timedelta(days=1)

    def per_hour(schedules) -> float:
        return sum(len(s.occurrences(start, end)) for s in schedules) / 24

    before = per_hour(CronSchedule.parse(text) for text in OLD_TIMERS.values())
    settings = Settings.from_env({"AML_TRIGGER_HOME": tempfile.gettempdir()})
    timers = index_app(function_app.app, app_settings(settings, {})).timers
    after = per_hour(t.schedule for t in timers if t.name != "scheduled_retrain")
    return before, after


# --- latencies ----------------------------------------------------------------------------
def _service(home: Path, **extra: str):
    import pipeline.local_submitter as local_submitter
    from pipeline.backends import make_submitter
    from pipeline.settings import Settings
    from triggers import runtime

    local_submitter.dispatch = lambda settings, store: []  # no pipeline runs while measuring
    env = {"AML_TRIGGER_HOME": str(home), "MAX_CONCURRENT_RUNS": "64", "BLOB_QUIET_SECONDS": "1"}
    env.update(extra)
    settings = Settings.from_env(env)
    recorder = _Recorder(make_submitter(settings))
    service = runtime.build_service(settings, submitter=recorder)
    runtime.install(service)
    return settings, service, recorder


def _ticking(schedule_text: str, action, stop: threading.Event) -> threading.Thread:
    from triggers.schedule import CronSchedule

    schedule = CronSchedule.parse(schedule_text)

    def loop() -> None:
        while not stop.is_set():
            due = schedule.next_after(datetime.now(UTC))
            if stop.wait(max(0.0, (due - datetime.now(UTC)).total_seconds())):
                return
            action()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def _at_random_times(items: Sequence[T], *, within: float) -> Iterator[T]:
    """Each item in turn, at uniformly random moments over `within` seconds: events
    that arrive independently, not in step with any timer under measurement."""
    start = time.perf_counter()
    offsets = sorted(random.uniform(0, within) for _ in items)
    for item, offset in zip(items, offsets, strict=True):
        time.sleep(max(0.0, start + offset - time.perf_counter()))
        yield item


def _wait_for(done: Callable[[], bool], *, seconds: float) -> None:
    """Until `done()` or `seconds` have passed; what never came is left out of the figure."""
    deadline = time.perf_counter() + seconds
    while not done() and time.perf_counter() < deadline:
        time.sleep(0.05)


def drop_latency(mode: str) -> list[float]:
    """Seconds from the window closing (last blob + quiet) to the run's submission."""
    import function_app
    from triggers import runtime
    from triggers.events import BlobArrival
    from triggers.host.functions import index_app
    from triggers.host.local_host import app_settings
    from triggers.host.queues import QueueRunner, open_source_for

    with tempfile.TemporaryDirectory(prefix="aml-trigger-bench-idle-") as home:
        settings, service, recorder = _service(Path(home))
        stop = threading.Event()
        if mode == "before":
            service.drop_queue = None  # as before: only a sweep closes windows
            _ticking(OLD_TIMERS["sweep_drops"], service.sweep_drops, stop)
        else:
            queues = index_app(function_app.app, app_settings(settings, {})).queues
            runner = QueueRunner(queues, open_source_for(settings))
            threading.Thread(target=runner.run_until, args=(stop, 2.0), daemon=True).start()
        closes: dict[str, float] = {}
        try:
            for i in _at_random_times(range(TRIALS), within=10):
                folder = f"drops/{mode}-{i}/"
                info = service.storage.put_blob("incoming", f"{folder}part-0.csv", b"a,b\n1,2\n")
                service.on_blob(BlobArrival(container="incoming", name=info.name,
                                            etag=info.etag, size=info.size))  # fmt: skip
                closes[folder] = time.perf_counter() + service.settings.blob_quiet_seconds
            _wait_for(lambda: len(recorder.submitted) >= TRIALS, seconds=30)
        finally:
            stop.set()
            runtime.reset()
        return [recorder.submitted[f] - closes[f] for f in closes if f in recorder.submitted]


class _Callbacks(BaseHTTPRequestHandler):
    received: dict[str, float] = {}

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        _Callbacks.received[body["run_id"]] = time.perf_counter()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def callback_latency(mode: str) -> list[float]:
    """Seconds from a run's end to its callback arriving."""
    import function_app
    from pipeline.request import TrainingRequest
    from pipeline.run_events import events_dir, publish_run_ended
    from pipeline.run_store import RunStore
    from triggers import runtime
    from triggers.host.event_grid import EventGridRunner
    from triggers.host.functions import index_app
    from triggers.host.local_host import app_settings
    from triggers.monitor import RunMonitor

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Callbacks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
    _Callbacks.received = {}
    with tempfile.TemporaryDirectory(prefix="aml-trigger-bench-idle-") as home:
        settings, service, _ = _service(Path(home))
        store = RunStore(settings.home)
        stop = threading.Event()
        run_ids = []
        for i in range(TRIALS):
            request = TrainingRequest(callback_url=hook, reason=f"bench {mode} {i}")
            outcome = service.submit_request(request, trigger="http",
                                             idempotency_key=f"http:{mode}-{i}")  # fmt: skip
            run_ids.append(outcome.run.run_id)
        if mode == "before":
            _ticking(OLD_TIMERS["monitor_runs"], lambda: RunMonitor(service).tick(), stop)
        else:
            functions = index_app(function_app.app, app_settings(settings, {})).event_grid
            runner = EventGridRunner(functions, events_dir(settings.home))
            threading.Thread(target=runner.run_until, args=(stop, 1.0), daemon=True).start()
        ended: dict[str, float] = {}
        try:
            for run_id in _at_random_times(run_ids, within=30):
                store.finish_run(run_id, "completed")
                ended[run_id] = time.perf_counter()
                if mode == "after":  # what pipeline/worker.py does when a run ends
                    publish_run_ended(settings.home, store.get(run_id), experiment="aml-trigger")
            _wait_for(lambda: len(_Callbacks.received) >= TRIALS, seconds=45)
        finally:
            stop.set()
            runtime.reset()
            server.shutdown()
            server.server_close()
        return [_Callbacks.received[r] - ended[r] for r in ended if r in _Callbacks.received]


# --- storage requests per POST ------------------------------------------------------------
class _CountRequests(logging.Handler):
    """azure-core's HttpLoggingPolicy logs each request it sends ("Request URL: ...")."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Request URL"):
            self.count += 1


def storage_requests_per_post() -> tuple[list[int], list[int]]:
    import azure.functions as func

    import function_app
    from triggers import runtime

    logger = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
    counter = _CountRequests()
    azurite = _Azurite()
    with tempfile.TemporaryDirectory(prefix="aml-trigger-bench-idle-") as home:
        try:
            _, service, _ = _service(Path(home), AzureWebJobsStorage="UseDevelopmentStorage=true")
            assert service.settings.storage_kind == "azurite"
            logger.addHandler(counter)
            logger.setLevel(logging.INFO)
            submit = function_app.submit_run.build().get_user_function()

            def post(key: str) -> int:
                before = counter.count
                response = submit(func.HttpRequest(
                    "POST", "http://localhost/api/runs", body=b'{"reason": "bench"}',
                    headers={"Content-Type": "application/json", "Idempotency-Key": key},
                ))  # fmt: skip
                assert response.status_code in (200, 202), response.get_body()
                return counter.count - before

            post("warm-up")  # creates the state container once
            accepted = [post(f"new-{i}") for i in range(TRIALS)]
            repeated = [post(f"new-{i}") for i in range(TRIALS)]
        finally:
            logger.removeHandler(counter)
            runtime.reset()
            azurite.close()
    return accepted, repeated


def main() -> None:
    print("== idle cost and event latency (issue 9, part 2)")
    before, after = timer_executions_per_hour()
    month = f"{before * 24 * 30:,.0f} -> {after * 24 * 30:,.0f} a month"
    print(f"  timer executions per idle hour (besides TRAIN_SCHEDULE): before {before:.0f}, "
          f"after {after:.0f} ({month})")  # fmt: skip
    for name, measure in (("blob landed -> run submitted (beyond the quiet window)", drop_latency),
                          ("run ended -> callback received", callback_latency)):  # fmt: skip
        figures = {mode: measure(mode) for mode in ("before", "after")}
        print(f"  {name}: p95 before {_p95(figures['before']):6.2f} s "
              f"({len(figures['before'])}/{TRIALS}), after {_p95(figures['after']):6.2f} s "
              f"({len(figures['after'])}/{TRIALS})")  # fmt: skip
    accepted, repeated = storage_requests_per_post()
    print(f"  storage requests on Azurite per accepted POST: first {accepted[0]}, "
          f"{TRIALS}th {accepted[-1]} (with {TRIALS - 1} runs open), mean "
          f"{sum(accepted) / TRIALS:.1f}; per repeated POST: mean {sum(repeated) / TRIALS:.1f} "
          "(admission reads one slots document: flat however many runs are open)")  # fmt: skip


if __name__ == "__main__":
    main()
