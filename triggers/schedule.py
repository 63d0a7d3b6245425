"""NCRONTAB schedules as the Functions host reads them: six fields, seconds first, UTC.

`{second} {minute} {hour} {day} {month} {day-of-week}`; each field takes `*`, a
value, a range `a-b`, a step `*/n` or `a-b/n`, and comma lists; months and weekdays
also by name (JAN, MON). As in NCrontab (the library the host uses), a time matches
when day AND weekday both match. Pure: the host computes due times with it and the
timer handler derives the occurrence a tick belongs to (its idempotency key).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_MONTHS = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()
_DAYS = "SUN MON TUE WED THU FRI SAT".split()
_FIELDS = (
    ("second", 0, 59, None),
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day", 1, 31, None),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 6, _DAYS),
)
_SEARCH_DAYS = 366 * 5  # a schedule like "0 0 0 29 2 MON" can skip years


class ScheduleError(ValueError):
    """The schedule text is not a valid 6-field NCRONTAB expression."""


def resolve_setting(value: str, settings: Mapping[str, str]) -> str:
    """`%NAME%` -> the app setting NAME, as the host binds schedules and paths."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in settings or not settings[name]:
            raise ScheduleError(f"app setting {name!r} (referenced as %{name}%) is not set")
        return settings[name]

    return re.sub(r"%([A-Za-z0-9_.]+)%", replace, value)


@dataclass(frozen=True)
class CronSchedule:
    text: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> CronSchedule:
        parts = text.split()
        if len(parts) != 6:
            raise ScheduleError(
                f"schedule {text!r} has {len(parts)} fields; NCRONTAB needs 6: "
                "second minute hour day month day-of-week, e.g. '0 0 2 * * *'"
            )
        sets = [
            _parse_field(part, *spec, text=text) for part, spec in zip(parts, _FIELDS, strict=True)
        ]
        return cls(text, *sets)

    def matches(self, when: datetime) -> bool:
        when = _utc(when)
        return (
            when.second in self.seconds
            and when.minute in self.minutes
            and when.hour in self.hours
            and self._day_matches(when)
        )

    def next_after(self, when: datetime) -> datetime:
        """The first occurrence strictly after `when`."""
        start = _utc(when).replace(microsecond=0) + timedelta(seconds=1)
        day = start.replace(hour=0, minute=0, second=0)
        for offset in range(_SEARCH_DAYS):
            candidate = day + timedelta(days=offset)
            if not self._day_matches(candidate):
                continue
            for hour in sorted(self.hours):
                for minute in sorted(self.minutes):
                    for second in sorted(self.seconds):
                        at = candidate.replace(hour=hour, minute=minute, second=second)
                        if at >= start:
                            return at
        raise ScheduleError(f"schedule {self.text!r} never fires")

    def occurrences(self, start: datetime, end: datetime) -> list[datetime]:
        """Every occurrence in [start, end): how many executions a window costs."""
        found, at = [], self.next_after(_utc(start) - timedelta(seconds=1))
        while at < _utc(end):
            found.append(at)
            at = self.next_after(at)
        return found

    def latest_at_or_before(self, when: datetime) -> datetime:
        """The most recent occurrence at or before `when` (the tick `when` belongs to)."""
        end = _utc(when).replace(microsecond=0)
        day = end.replace(hour=0, minute=0, second=0)
        for offset in range(_SEARCH_DAYS):
            candidate = day - timedelta(days=offset)
            if not self._day_matches(candidate):
                continue
            for hour in sorted(self.hours, reverse=True):
                for minute in sorted(self.minutes, reverse=True):
                    for second in sorted(self.seconds, reverse=True):
                        at = candidate.replace(hour=hour, minute=minute, second=second)
                        if at <= end:
                            return at
        raise ScheduleError(f"schedule {self.text!r} never fired in the last 5 years")

    def _day_matches(self, when: datetime) -> bool:
        weekday = (when.weekday() + 1) % 7  # Python: Monday=0; cron: Sunday=0
        return when.day in self.days and when.month in self.months and weekday in self.weekdays


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def _parse_field(
    part: str, name: str, low: int, high: int, names: list[str] | None, *, text: str
) -> frozenset[int]:
    values: set[int] = set()
    for item in part.split(","):
        body, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not _digits(step_text) or int(step_text) == 0:
                raise ScheduleError(
                    f"schedule {text!r}: {name} step {step_text!r} must be a positive integer"
                )
            step = int(step_text)
        if body == "*":
            start, stop = low, high
        elif "-" in body:
            first, _, last = body.partition("-")
            start, stop = (
                _value(first, name, low, high, names, text),
                _value(last, name, low, high, names, text),
            )
            if start > stop:
                raise ScheduleError(f"schedule {text!r}: {name} range {body!r} runs backwards")
        else:
            start = _value(body, name, low, high, names, text)
            stop = high if step_text else start
        values.update(range(start, stop + 1, step))
    return frozenset(values)


def _value(token: str, name: str, low: int, high: int, names: list[str] | None, text: str) -> int:
    upper = token.upper()
    if names and upper in names:
        return names.index(upper) + low
    if name == "day-of-week" and token == "7":
        return 0  # Sunday written as 7, as cron allows
    if not _digits(token) or not low <= int(token) <= high:
        accepted = f"{low}-{high}" + (f" or {names[0]}..{names[-1]}" if names else "")
        raise ScheduleError(f"schedule {text!r}: {name} {token!r} is not in {accepted}")
    return int(token)


def _digits(token: str) -> bool:
    # ASCII only: str.isdigit also takes '²', which int() refuses.
    return token.isascii() and token.isdigit() and len(token) <= 4
