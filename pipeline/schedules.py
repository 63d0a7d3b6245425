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
from pipeline.aml_jobs import TAG_CODE_VERSION
from pipeline.aml_submitter import AmlSubmitter, parse_component, refuse_what_aml_cannot_run
from pipeline.request import TrainingRequest
from pipeline.submitter import SubmissionError

Frequency = Literal["minute", "hour", "day", "week", "month"]
FREQUENCIES = ("minute", "hour", "day", "week", "month")
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*,/-]+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")
_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_SCHEDULE_TAG = "aml_trigger.schedule"  # on every schedule `create` makes
# On the schedule's job: the pipeline component version its nodes come from.
_FOLLOWS = "aml_trigger.pipeline_component"
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
        refuse_what_aml_cannot_run(request)
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
        job.properties = {**(job.properties or {}), _SCHEDULE_TAG: name, _FOLLOWS: component_id}
        job = self._working_nodes(client, job, component_id)
        # Each firing is a new job with a name Azure ML generates (displayed as
        # <schedule>-<UTC time>), so each is a run of its own in `runs`.
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
            tags={_SCHEDULE_TAG: name},
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
        """Disable (if enabled), then delete: Azure ML refuses to delete an enabled
        schedule ("A schedule must be disabled to be deleted", Microsoft Learn,
        "Schedule Azure Machine Learning pipeline jobs")."""
        found = self._call(f"reading schedule {name}", lambda c: c.schedules.get(name))
        if getattr(found, "is_enabled", True):
            self.disable(name)
        self._call(f"deleting schedule {name}", lambda c: c.schedules.begin_delete(name).result())

    def follow(self, component: str) -> list[str]:
        """Point every schedule this tool created at `component` (`name:version`, as
        `publish` prints it) and return the names changed. A schedule stores a copy
        of its job, component version included, so without this it would keep
        running the pipeline as published when the schedule was made (Learn:
        "Update a new version pipeline to existing schedule"). Enabled state,
        trigger and inputs stay as they are; the lineage input and tag
        code_version follow the version."""
        from azure.ai.ml.entities import PipelineJob

        name, version, arm = parse_component(component)
        if not (arm or version):
            raise SubmissionError(
                "invalid_request", f"{component!r}: give the published `name:version`"
            )
        target = arm or self.submitter.component_arm_id(name, version or "")
        client = self.submitter.client()
        updated = []
        for schedule in self._call("listing schedules", lambda c: list(c.schedules.list())):
            if schedule is None or _SCHEDULE_TAG not in (schedule.tags or {}):
                continue
            old = schedule.create_job
            if str((old.properties or {}).get(_FOLLOWS, "")).lower() == target.lower():
                continue
            # The same job (inputs, settings, tags) of the new pipeline version, its
            # nodes planned again from that version's published step components.
            job = PipelineJob(
                display_name=old.display_name,
                experiment_name=old.experiment_name,
                component=target,
                inputs={k: getattr(v, "_data", v) for k, v in old.inputs.items()},
                settings=old.settings,
                tags={**(old.tags or {}), TAG_CODE_VERSION: version},
                properties={**(old.properties or {}), _FOLLOWS: target},
            )
            job.inputs.code_version = version  # attribute set: the SDK wraps it as an input
            schedule.create_job = self._working_nodes(client, job, target)
            self._call(
                f"updating schedule {schedule.name}",
                lambda c, s=schedule: c.schedules.begin_create_or_update(s).result(),
            )
            updated.append(schedule.name)
        return updated

    def trigger(self, name: str) -> str | None:
        """Start the schedule's job once, now; returns the new job's name."""
        result = self._call(f"triggering schedule {name}", lambda c: c.schedules.trigger(name))
        return getattr(result, "job_name", None)

    def _working_nodes(self, client: Any, job: Any, component_id: str) -> Any:
        """The job without the nodes its inputs leave unused (pipeline/aml_job_graph.py),
        as a trigger's run is built."""
        from pipeline.aml_job_graph import per_request_job

        inputs = {k: getattr(v, "_data", v) for k, v in job.inputs.items()}
        return self._call(
            f"reading pipeline component {component_id}",
            lambda c: per_request_job(
                c,
                job,
                component_id=component_id,
                candidate_count=int(inputs.get("candidate_count") or 1),
                deploy_target=str(inputs.get("deploy_target") or "none"),
                published=self.submitter.__dict__.setdefault("_published_pipelines", {}),
            ),
        )

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
