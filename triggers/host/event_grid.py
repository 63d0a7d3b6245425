"""Event Grid triggered functions on the local host: the local backend's events.

In Azure, Event Grid posts each event to the function its subscription names
(infra/ subscribes `run_ended` to the workspace's run events) and retries a failed
delivery with back-off, up to 30 attempts, before dropping or dead-lettering it
(https://learn.microsoft.com/azure/event-grid/delivery-and-retry). Here the local
worker writes each event as a JSON file into `$AML_TRIGGER_HOME/events/`
(pipeline/run_events.py); every Event Grid function gets it (the one subscription
the app has), decoded by azure-functions' own converter, so the handler receives
the same `EventGridEvent` the Python worker builds. A delivered file is deleted; a
failing one is tried again on later polls, then moved to `events/dead-letter/`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter

from triggers.host.functions import EventGridFunction

log = logging.getLogger("aml_trigger.host.eventgrid")

MAX_DELIVERY_ATTEMPTS = 30


@dataclass
class DeliveryReport:
    delivered: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)


class EventGridRunner:
    def __init__(
        self,
        functions: tuple[EventGridFunction, ...],
        events_dir: Path,
        *,
        max_attempts: int = MAX_DELIVERY_ATTEMPTS,
    ) -> None:
        self.functions = functions
        self.dir = Path(events_dir)
        self.max_attempts = max_attempts
        self._attempts: dict[str, int] = {}

    def deliver(self) -> DeliveryReport:
        report = DeliveryReport()
        try:
            names = sorted(n for n in os.listdir(self.dir) if n.endswith(".json"))
        except FileNotFoundError:
            return report
        for name in names:
            self._deliver_file(self.dir / name, report)
        return report

    def run_until(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        while not stop.is_set():
            try:
                self.deliver()
            except Exception:  # a broken file must not stop deliveries
                log.exception("event delivery failed")
            stop.wait(interval_s)

    def _deliver_file(self, path: Path, report: DeliveryReport) -> None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        try:
            # Event Grid posts an array; the host calls the function once per element.
            events = [_decode(element) for element in _elements(text)]
            for event in events:
                for function in self.functions:
                    function.call(event)
        except Exception as exc:
            attempts = self._attempts.get(path.name, 0) + 1
            self._attempts[path.name] = attempts
            log.warning("event %s: delivery %d failed: %s: %s", path.name, attempts,
                        type(exc).__name__, exc)  # fmt: skip
            if attempts >= self.max_attempts:
                dead = self.dir / "dead-letter"
                dead.mkdir(exist_ok=True)
                os.replace(path, dead / path.name)
                self._attempts.pop(path.name, None)
                report.dead_lettered.append(path.name)
            else:
                report.failed.append(path.name)
            return
        path.unlink(missing_ok=True)
        self._attempts.pop(path.name, None)
        report.delivered.append(path.name)


def _decode(element):
    # azure-functions' own converter: the object the Python worker would pass.
    datum = meta.Datum(json.dumps(element), "json")
    return EventGridEventInConverter.decode(datum, trigger_metadata={})


def _elements(text: str) -> list:
    body = json.loads(text)
    return body if isinstance(body, list) else [body]
