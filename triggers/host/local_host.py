"""LocalHost: function_app served on a laptop (what `aml-trigger serve` runs).

Start: index the app, resubmit claims a previous process left unsubmitted, then
serve HTTP, run timers, watch the incoming container, poll the queues of queue
triggers and deliver the local backend's Event Grid events, each on its own thread.
Stop (SIGINT/SIGTERM): stop taking work and let in-flight calls finish; anything
claimed but not submitted is in the ledger and is submitted on the next start.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import threading
from collections.abc import Mapping
from pathlib import Path

from triggers.host.blob_watcher import BlobWatcher
from triggers.host.event_grid import EventGridRunner
from triggers.host.functions import FunctionIndex, index_app
from triggers.host.http_limits import HttpLimits
from triggers.host.http_server import FunctionsHttpServer
from triggers.host.queues import QueueRunner, open_source_for
from triggers.host.timers import TimerRunner

log = logging.getLogger("aml_trigger.host")

REPO_ROOT = Path(__file__).resolve().parents[2]


def app_settings(settings, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """App settings as the host resolves `%NAME%`: the environment, with the
    contract's defaults for the settings function_app refers to."""
    merged = {
        "TRAIN_SCHEDULE": settings.train_schedule,
        "INCOMING_CONTAINER": settings.incoming_container,
    }
    merged.update(os.environ if environ is None else environ)
    return merged


def host_extensions(host_json: Path = REPO_ROOT / "host.json") -> dict:
    """host.json's `extensions` (route prefix, poison threshold), as the host reads them."""
    try:
        return json.loads(host_json.read_text()).get("extensions", {})
    except (FileNotFoundError, ValueError):
        return {}


def route_prefix(host_json: Path = REPO_ROOT / "host.json") -> str:
    return host_extensions(host_json).get("http", {}).get("routePrefix", "api")


def _seconds(value: str | None, default: float) -> float:
    """host.json's "hh:mm:ss" durations."""
    if not value:
        return default
    hours, minutes, seconds = value.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


class LocalHost:
    def __init__(
        self,
        app,
        settings,
        *,
        port: int = 7071,
        key: str | None = None,
        environ: Mapping[str, str] | None = None,
        blob_interval_s: float = 2.0,
        watch_blobs: bool = True,
        run_timers: bool = True,
        run_queues: bool = True,
        deliver_events: bool = True,
        http_limits: HttpLimits | None = None,
    ) -> None:
        self.settings = settings
        self.index: FunctionIndex = index_app(app, app_settings(settings, environ))
        self.key_generated = key is None and settings.function_key is None
        if key is None:
            key = (
                settings.function_key.get_secret_value()
                if settings.function_key
                else secrets.token_urlsafe(32)
            )
        self.http = FunctionsHttpServer(
            self.index.http, key=key, port=port, route_prefix=route_prefix(), limits=http_limits
        )
        self.key = key
        state_dir = Path(settings.home) / "host"
        self.timers = TimerRunner(self.index.timers, state_dir / "timers") if run_timers else None
        self.watcher = None
        if watch_blobs and self.index.blobs:
            from pipeline.storage import open_storage

            threshold = host_extensions().get("blobs", {}).get("poisonBlobThreshold", 5)
            self.watcher = BlobWatcher(
                self.index.blobs,
                open_storage(settings),
                state_dir,
                threshold=int(threshold),
                prefix=settings.blob_prefix,
                marker_name=settings.blob_marker_name,
            )
        queues = host_extensions().get("queues", {})
        self.queue_interval_s = _seconds(queues.get("maxPollingInterval"), 60.0)
        self.queues = None
        if run_queues and self.index.queues:
            self.queues = QueueRunner(
                self.index.queues,
                open_source_for(settings),
                max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
                retry_delay_s=_seconds(queues.get("visibilityTimeout"), 0.0),
            )
        self.events = None
        if deliver_events and self.index.event_grid:
            from pipeline.run_events import events_dir

            self.events = EventGridRunner(self.index.event_grid, events_dir(settings.home))
        self.blob_interval_s = blob_interval_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return self.http.url

    def start(self, service=None) -> None:
        from triggers import runtime

        if service is not None:
            runtime.install(service)
        recovered = runtime.service().recover(grace_s=0)
        if recovered:
            log.info("resubmitted %d claimed run(s) left by a previous process", len(recovered))
        self.http.start()
        if self.timers is not None:
            self._spawn("timers", self.timers.run_until, self._stop)
        if self.watcher is not None:
            self._spawn("blobs", self.watcher.run_until, self._stop, self.blob_interval_s)
        if self.queues is not None:
            self._spawn("queues", self.queues.run_until, self._stop, self.queue_interval_s)
        if self.events is not None:
            self._spawn("events", self.events.run_until, self._stop)

    def _spawn(self, name: str, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=name)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self.http.stop()
        for thread in self._threads:
            thread.join(timeout=30)
        if self.watcher is not None:
            self.watcher.close()

    def serve_forever(self, ready=None) -> None:
        """Run until SIGINT or SIGTERM, then stop cleanly. `ready()` is called once
        everything is started and the signal handlers are in place."""
        stop = threading.Event()

        def on_signal(signum, _frame) -> None:
            log.info("signal %s: stopping", signal.Signals(signum).name)
            stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            if ready is not None:
                ready()
            while not stop.wait(0.5):
                pass
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
