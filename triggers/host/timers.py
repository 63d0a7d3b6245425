"""Timer functions on their NCRONTAB schedules, with the host's schedule monitor.

With `use_monitor` the last and next occurrences are persisted under
`$AML_TRIGGER_HOME/host/timers/<function>.json` (the host keeps them in storage):
when the host starts after missing occurrences, the function runs ONCE with
`past_due=True`, however many were missed. The status is written after the
function returns, so a crash mid-tick repeats the tick rather than losing it (the
timer's idempotency key makes the repeat the same run).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from azure.functions.timer import TimerRequest

from triggers.host.functions import TimerFunction

log = logging.getLogger("aml_trigger.host.timers")


@dataclass(frozen=True)
class Fired:
    function: str
    past_due: bool
    scheduled: datetime
    error: str | None = None


class TimerRunner:
    def __init__(
        self,
        timers: tuple[TimerFunction, ...],
        status_dir: Path,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.timers = timers
        self.status_dir = Path(status_dir)
        self.clock = clock
        self._next: dict[str, datetime] = {}
        self._last: dict[str, datetime | None] = {}

    def start_up(self) -> list[Fired]:
        """Fire what the monitor says was missed (once, past due) and `run_on_startup`
        timers, then schedule every timer's next occurrence."""
        now = self.clock()
        fired = []
        for timer in self.timers:
            status = self._load(timer) if timer.use_monitor else None
            self._last[timer.name] = _parse(status.get("last")) if status else None
            missed = _parse(status.get("next")) if status else None
            if missed is not None and missed <= now:
                fired.append(self._fire(timer, missed, past_due=True, now=now))
            elif timer.run_on_startup:
                fired.append(self._fire(timer, now, past_due=False, now=now))
            self._next[timer.name] = timer.schedule.next_after(now)
            if timer.use_monitor:
                self._save(timer, now)
        return fired

    def run_due(self) -> list[Fired]:
        """Fire every timer whose next occurrence has come. Several occurrences
        missed while the process slept (a suspended laptop) fire once, past due."""
        now = self.clock()
        fired = []
        for timer in self.timers:
            due = self._next.get(timer.name)
            if due is None or due > now:
                continue
            following = timer.schedule.next_after(due)
            past_due = following <= now
            fired.append(self._fire(timer, due, past_due=past_due, now=now))
            self._next[timer.name] = timer.schedule.next_after(now)
            if timer.use_monitor:
                self._save(timer, now)
        return fired

    def seconds_to_next(self) -> float | None:
        if not self._next:
            return None
        return max(0.0, (min(self._next.values()) - self.clock()).total_seconds())

    def run_until(self, stop: threading.Event) -> None:
        self.start_up()
        while not stop.is_set():
            wait = self.seconds_to_next()
            stop.wait(1.0 if wait is None else min(wait, 1.0))
            if not stop.is_set():
                self.run_due()

    # --- one tick -------------------------------------------------------------------
    def _fire(self, timer: TimerFunction, scheduled: datetime, *, past_due: bool, now) -> Fired:
        last = self._last.get(timer.name)
        request = TimerRequest(
            past_due=past_due,
            schedule_status={
                "Last": last.isoformat() if last else None,
                "Next": timer.schedule.next_after(now).isoformat(),
                "LastUpdated": now.isoformat(),
            },
            schedule={"AdjustForDST": True},
        )
        error = None
        try:
            timer.call(request)
        except Exception as exc:  # a failing tick must not stop the other timers
            log.exception("timer %s failed", timer.name)
            error = f"{type(exc).__name__}: {exc}"
        self._last[timer.name] = scheduled
        return Fired(timer.name, past_due, scheduled, error)

    def _path(self, timer: TimerFunction) -> Path:
        return self.status_dir / f"{timer.name}.json"

    def _load(self, timer: TimerFunction) -> dict | None:
        try:
            status = json.loads(self._path(timer).read_text())
        except (FileNotFoundError, ValueError):
            return None
        if status.get("schedule") != timer.schedule.text:
            return None  # the schedule changed: old occurrences no longer apply
        return status

    def _save(self, timer: TimerFunction, now: datetime) -> None:
        last = self._last.get(timer.name)
        status = {
            "schedule": timer.schedule.text,
            "last": last.isoformat() if last else None,
            "next": self._next[timer.name].isoformat(),
            "last_updated": now.isoformat(),
        }
        self.status_dir.mkdir(parents=True, exist_ok=True)
        path = self._path(timer)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status))
        os.replace(tmp, path)


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
