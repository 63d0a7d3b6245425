"""Azure ML jobs as run records: what the submitter writes on a job (properties
for identity, tags for people) and how a job reads back as a RunRecord."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pipeline.aml_status import group_status, run_status
from pipeline.runs import RunRecord

# Job properties are immutable and filterable server side (`jobs?properties=k=v`),
# so they carry the identity the submitter looks jobs up by; tags are for people.
PROP_RUN_ID = "aml_trigger.run_id"
PROP_GROUP = "aml_trigger.comparison_group"
PROP_COMPUTE = "aml_trigger.compute"
TAG_TRIGGER = "aml_trigger.trigger"
TAG_KEY = "aml_trigger.idempotency_key"
TAG_REASON = "aml_trigger.reason"
TAG_ORIGINATOR = "aml_trigger.originator"
TAG_CODE_VERSION = "aml_trigger.code_version"


def pipeline_job(
    *,
    name: str,
    group: str,
    component_id: str,
    values: dict[str, Any],
    data: dict[str, str],
    compute: str,
    experiment: str,
    tags: dict[str, str],
) -> Any:
    """The PipelineJob of one of our pipeline components (no request sent): named for
    the run, with the identity properties the submitter finds it by. `data` names the
    inputs that are data assets, with their type (uri_folder, uri_file); the other
    values are literals."""
    from azure.ai.ml import Input
    from azure.ai.ml.entities import PipelineJob, PipelineJobSettings

    inputs = {
        key: Input(type=data[key], path=value) if key in data else value
        for key, value in values.items()
    }
    return PipelineJob(
        name=name,
        display_name=name,
        component=component_id,
        inputs=inputs,
        settings=PipelineJobSettings(default_compute=compute),
        experiment_name=experiment,
        tags=tags,
        properties={PROP_RUN_ID: name, PROP_GROUP: group, PROP_COMPUTE: compute},
    )


def job_record(job: Any) -> RunRecord:
    """The run record of one Azure ML job (pipeline or batch job)."""
    # Steps come from the child jobs, read separately (pipeline/aml_steps.py).
    raw = getattr(job.status, "value", job.status)
    status = run_status(raw)
    tags = dict(getattr(job, "tags", None) or {})
    props = dict(getattr(job, "properties", None) or {})
    context = getattr(job, "creation_context", None)
    created = getattr(context, "created_at", None)
    compute = props.get(PROP_COMPUTE) or _compute_name(job)
    extra: dict[str, Any] = {
        "aml_status": str(raw) if raw is not None else None,
        "job_name": job.name,
        "experiment": getattr(job, "experiment_name", None),
        "compute": compute,
        "comparison_group": props.get(PROP_GROUP),
        "studio_url": getattr(job, "studio_url", None),
    }
    record = RunRecord(
        run_id=job.name,
        status=status,
        backend="aml",
        created_at=_iso(created) or _iso(datetime.now(UTC)),
        started_at=_iso(props.get("StartTimeUtc")),
        finished_at=_iso(props.get("EndTimeUtc")) if record_done(status) else None,
        trigger=tags.get(TAG_TRIGGER, "manual"),
        idempotency_key=tags.get(TAG_KEY),
        error=_job_error(job) if status == "failed" else None,
        extra={k: v for k, v in extra.items() if v is not None},
    )
    return record


def group_record(run_id: str, records: list[RunRecord]) -> RunRecord:
    first = min(records, key=lambda r: r.created_at)
    status = group_status(r.status for r in records)
    jobs = [
        {
            "name": r.run_id,
            "job_name": r.extra.get("job_name"),
            "compute": r.extra.get("compute"),
            "status": r.status,
            "aml_status": r.extra.get("aml_status"),
            "studio_url": r.extra.get("studio_url"),
        }
        for r in records
    ]
    finished = [r.finished_at for r in records if r.finished_at]
    return RunRecord(
        run_id=run_id,
        status=status,
        backend="aml",
        created_at=first.created_at,
        started_at=min((r.started_at for r in records if r.started_at), default=None),
        finished_at=max(finished)
        if status in {"completed", "failed", "canceled"} and finished
        else None,
        trigger=first.trigger,
        idempotency_key=first.idempotency_key,
        error="; ".join(f"{r.run_id}: {r.error}" for r in records if r.error) or None,
        extra={
            "comparison_group": run_id,
            "jobs": jobs,
            "already_submitted": any(r.extra.get("already_submitted") for r in records),
        },
    )


def record_done(status: str) -> bool:
    return status in {"completed", "failed", "canceled"}


def _compute_name(job: Any) -> str | None:
    settings = getattr(job, "settings", None)
    compute = getattr(settings, "default_compute", None) or getattr(job, "compute", None)
    if not compute:
        return None
    return str(compute).rstrip("/").rsplit("/", 1)[-1].removeprefix("azureml:")


def _job_error(job: Any) -> str:
    props = dict(getattr(job, "properties", None) or {})
    for key in ("azureml.error", "error", "Error"):
        if props.get(key):
            return str(props[key])[:500]
    return "the Azure ML job failed; see its logs in Azure ML studio"


def _iso(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat()
    return str(value)
