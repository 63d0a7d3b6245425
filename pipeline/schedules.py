"""Azure ML schedules that start the training pipeline: a JobSchedule whose trigger
is a 5-field cron (with a time zone) or a recurrence, and whose job is the same
pipeline job a trigger submits (built by AmlSubmitter.build_job, tagged `schedule`).

These run inside Azure ML with no Function App involved; the Functions timer
(TRAIN_SCHEDULE) is the other way to retrain on a clock. Use one or the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.aml_client import to_submission_error
from pipeline.aml_submitter import AmlSubmitter
from pipeline.request import TrainingRequest
from pipeline.submitter import SubmissionError

Frequency = Literal["minute", "hour", "day", "week", "month"]
FREQUENCIES = ("minute", "hour", "day", "week", "month")
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*,/-]+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")
_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_CRON_NAMES = ("minute", "hour", "day of month", "month", "day of week")


@dataclass(frozen=True)
class Cron:
    expression: str
    time_zone: str = "UTC"


@dataclass(frozen=True)
class Recurrence:
    frequency: Frequency
    interval: int
    hours: tuple[int, ...] = ()
    minutes: tuple[int, ...] = ()
    time_zone: str = "UTC"


def check_cron(expression: str) -> str:
    """A 5-field cron (minute hour day-of-month month day-of-week), or ValueError
    naming the field. Azure ML schedules take 5 fields, unlike the Functions timer's
    6-field NCRONTAB (seconds first)."""
    fields = expression.split()
    if len(fields) != 5:
        hint = " (drop the seconds field of an NCRONTAB)" if len(fields) == 6 else ""
        raise ValueError(
            f"cron {expression!r}: expected 5 fields "
            f"(minute hour day-of-month month day-of-week), got {len(fields)}{hint}"
        )
    for value, (low, high), name in zip(fields, _CRON_RANGES, _CRON_NAMES, strict=True):
        if not _CRON_FIELD.match(value):
            raise ValueError(f"cron {expression!r}: {name} field {value!r} has invalid characters")
        for number in re.findall(r"\d+", value):
            step = f"/{number}" in value
            if not step and not low <= int(number) <= high:
                raise ValueError(f"cron {expression!r}: {name} {number} is outside {low}-{high}")
    return " ".join(fields)


def check_recurrence(rule: Recurrence) -> Recurrence:
    if rule.frequency not in FREQUENCIES:
        raise ValueError(f"frequency {rule.frequency!r}: one of {', '.join(FREQUENCIES)}")
    if not 1 <= rule.interval <= 1000:
        raise ValueError(f"interval {rule.interval}: between 1 and 1000")
    if any(not 0 <= h <= 23 for h in rule.hours):
        raise ValueError(f"hours {list(rule.hours)}: each between 0 and 23")
    if any(not 0 <= m <= 59 for m in rule.minutes):
        raise ValueError(f"minutes {list(rule.minutes)}: each between 0 and 59")
    if (rule.hours or rule.minutes) and rule.frequency not in {"day", "week"}:
        raise ValueError("hours/minutes (--at) apply to daily or weekly recurrences only")
    return rule


class Schedules:
    """Create, list, enable, disable, delete and trigger the pipeline's schedules."""

    def __init__(self, submitter: AmlSubmitter) -> None:
        self.submitter = submitter

    def build(self, name: str, request: TrainingRequest, when: Cron | Recurrence) -> Any:
        """The JobSchedule (nothing sent except, for a bare component name, its lookup)."""
        from azure.ai.ml.entities import (
            CronTrigger,
            JobSchedule,
            RecurrencePattern,
            RecurrenceTrigger,
        )

        if not _NAME.match(name):
            raise SubmissionError(
                "invalid_request",
                f"schedule name {name!r}: letters, digits, '_' or '-', starting with a "
                "letter or digit",
            )
        plans = self.submitter.plans(request, name)
        if len(plans) != 1:
            raise SubmissionError(
                "invalid_request",
                "compute: a schedule starts one job; create one schedule per compute target",
            )
        client = self.submitter.client(for_submission=True)
        component_id, version = self.submitter.resolve_component(client)
        job = self.submitter.build_job(
            request,
            name=name,
            run_id=name,
            compute=plans[0][1],
            trigger="schedule",
            idempotency_key=None,
            component_id=component_id,
            code_version=version,
        )
        # Each firing is a new job with a name Azure ML generates.
        job.name = None
        job.display_name = f"{name} (scheduled)"
        if isinstance(when, Cron):
            trigger = CronTrigger(expression=check_cron(when.expression), time_zone=when.time_zone)
        else:
            rule = check_recurrence(when)
            pattern = None
            if rule.hours or rule.minutes:
                pattern = RecurrencePattern(
                    hours=list(rule.hours) or [0], minutes=list(rule.minutes) or [0]
                )
            trigger = RecurrenceTrigger(
                frequency=rule.frequency,
                interval=rule.interval,
                schedule=pattern,
                time_zone=rule.time_zone,
            )
        return JobSchedule(
            name=name,
            trigger=trigger,
            create_job=job,
            display_name=name,
            tags={"aml_trigger.schedule": name},
        )

    def create(self, name: str, request: TrainingRequest, when: Cron | Recurrence) -> dict:
        schedule = self.build(name, request, when)
        created = self._call(
            f"creating schedule {name}",
            lambda c: c.schedules.begin_create_or_update(schedule).result(),
        )
        return describe(created)

    def list(self) -> list[dict]:
        found = self._call("listing schedules", lambda c: list(c.schedules.list()))
        return [describe(s) for s in found if s is not None]

    def enable(self, name: str) -> dict:
        return describe(
            self._call(
                f"enabling schedule {name}", lambda c: c.schedules.begin_enable(name).result()
            )
        )

    def disable(self, name: str) -> dict:
        return describe(
            self._call(
                f"disabling schedule {name}", lambda c: c.schedules.begin_disable(name).result()
            )
        )

    def delete(self, name: str) -> None:
        self._call(f"deleting schedule {name}", lambda c: c.schedules.begin_delete(name).result())

    def trigger(self, name: str) -> str | None:
        """Start the schedule's job once, now; returns the new job's name."""
        result = self._call(f"triggering schedule {name}", lambda c: c.schedules.trigger(name))
        return getattr(result, "job_name", None)

    def _call(self, action: str, call: Any) -> Any:
        client = self.submitter.client()
        try:
            return call(client)
        except SubmissionError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped
            raise to_submission_error(
                exc, action=action, workspace=self.submitter.workspace
            ) from None


def describe(schedule: Any) -> dict:
    trigger = getattr(schedule, "trigger", None)
    when: dict[str, Any] = {}
    if trigger is not None:
        kind = getattr(trigger, "type", None)
        when["type"] = str(getattr(kind, "value", kind)).lower()
        for key in ("expression", "frequency", "interval", "time_zone"):
            value = getattr(trigger, key, None)
            if value is not None:
                when[key] = getattr(value, "value", value)
    return {
        "name": schedule.name,
        "enabled": bool(getattr(schedule, "is_enabled", False)),
        "trigger": when,
        "provisioning_state": _plain(getattr(schedule, "provisioning_state", None)),
    }


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)
