"""A run whose retrain policy can skip starts as a drift probe; training follows it.

Azure ML cannot branch a pipeline on a value a node computes without a private
protocol (pipeline/aml_job_graph.py), so a request under retrain_policy `on_drift`
or `min_new_rows` runs in two jobs under one run id:

1. the probe, named by the run id: prep and check_drift only. check_drift tags its
   own run with the decision (steps/drift.py): on Azure ML a step's MLflow run is its
   child job ("runs are called jobs", Microsoft Learn, "Log metrics, parameters, and
   files with MLflow"), so the tags come back with the job's child runs from the run
   history, the same read that lists a run's steps (pipeline/aml_steps.py).
2. when the probe has completed, the status read (the run-ended event, or the
   safety net) reads the decision. `skip`: the run is completed with the reason, as a
   local run that skipped is, and nothing else starts. `retrain`: the training job
   `<probe>-retrain` is submitted with the later nodes only, reading the data the
   probe prepared (the probe wrote it to a datastore path fixed by its name), under
   retrain_policy `always`, so nothing is checked twice.

The training job's name is fixed by the probe's, so reading the status twice
submits it once (pipeline/preemption.py `get_or_submit`, the mechanism a preempted
job's retry uses), and the run's record follows the latest job: cancel goes to it,
and its steps are the probe's then the training job's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.runs import RunRecord

PROP_DRIFT_PROBE = "aml_trigger.drift_probe"
PROP_TRAINING_OF = "aml_trigger.training_of"
# The pipeline component version the probe was built from: the training job is built
# from the same one, even if a newer version was published in between.
PROP_PIPELINE = "aml_trigger.pipeline_component"
# What check_drift writes on its run (steps/drift.py writes these names).
TAG_DECISION = "aml_trigger.drift_decision"
TAG_REASON = "aml_trigger.drift_reason"
_DRIFT_NODE = "check_drift"


def training_name(probe_job: str) -> str:
    return f"{probe_job}-retrain"


def is_drift_probe(job: Any) -> bool:
    return PROP_DRIFT_PROBE in dict(getattr(job, "properties", None) or {})


def is_training(job: Any) -> bool:
    return PROP_TRAINING_OF in dict(getattr(job, "properties", None) or {})


def drift_decision(runs: list[Any]) -> dict[str, str] | None:
    """check_drift's decision and reason from a probe's child runs; None when no
    check_drift run carries one."""
    for run in runs:
        if (getattr(run, "display_name", None) or getattr(run, "name", None)) != _DRIFT_NODE:
            continue
        tags = dict(getattr(run, "tags", None) or {})
        if tags.get(TAG_DECISION) in ("retrain", "skip"):
            return {"decision": tags[TAG_DECISION], "reason": tags.get(TAG_REASON, "")}
    return None


def after_probe(
    client: Any,
    probe: Any,
    record: RunRecord,
    *,
    follow: Callable[[Any, Any], RunRecord],
    build_training: Callable[[], Any],
    children: Callable[[str], list[Any]] | None = None,
) -> RunRecord:
    """The run's record once its probe `probe` reads as `record` (the probe's latest
    attempt): the probe's own while it runs or if it did not complete; completed on a
    skip; else the training job's, submitted now if it is not yet. `children` reads a
    job's child runs (default: from the run history, unshared)."""
    probe_attempt = record.extra.get("job_name") or probe.name
    phases = [probe_attempt]
    if record.status != "completed":
        return _update(record, phase_jobs=phases)
    from pipeline.aml_steps import ChildRuns

    read = children or ChildRuns(client)
    try:
        decision = drift_decision(read(probe_attempt))
    except Exception as exc:  # noqa: BLE001 - read again on the next status read
        return _waiting(record, phases, f"reading check_drift's decision: {_message(exc)}")
    if decision is None:
        return _failed(
            record,
            phases,
            f"check_drift of job {probe_attempt} recorded no {TAG_DECISION} tag: the "
            "published step components predate the drift probe; run `aml-trigger publish`",
        )
    if decision["decision"] == "skip":
        return _update(record, phase_jobs=phases, drift=decision)
    from pipeline.preemption import get_or_submit

    name = training_name(probe.name)
    try:
        training = get_or_submit(client, name, build_training, experiment=probe.experiment_name)
    except Exception as exc:  # noqa: BLE001 - mapped below
        if _transient(exc):
            return _waiting(record, phases, f"submitting job {name}: {_message(exc)}")
        return _failed(record, phases, f"submitting job {name}: {_message(exc)}")
    trained = follow(client, training)
    phases.append(trained.extra.get("job_name") or training.name)
    return trained.model_copy(
        update={
            "run_id": probe.name,
            "created_at": record.created_at,
            "started_at": record.started_at or trained.started_at,
            "trigger": record.trigger,
            "idempotency_key": record.idempotency_key,
            "extra": {
                **trained.extra,
                "job_name": phases[-1],
                "phase_jobs": phases,
                "drift": decision,
            },
        }
    )


def _update(record: RunRecord, **extra: Any) -> RunRecord:
    return record.model_copy(update={"extra": {**record.extra, **extra}})


def _waiting(record: RunRecord, phases: list[str], why: str) -> RunRecord:
    # Not an outcome: the run is not over until the decision is read and acted on.
    updated = _update(record, phase_jobs=phases, drift_probe_error=why)
    return updated.model_copy(update={"status": "running", "finished_at": None})


def _failed(record: RunRecord, phases: list[str], error: str) -> RunRecord:
    updated = _update(record, phase_jobs=phases)
    return updated.model_copy(update={"status": "failed", "error": error[:500]})


def _transient(exc: BaseException) -> bool:
    status = getattr(exc, "status_code", None)
    return status is None or status == 429 or status >= 500


def _message(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def training_job(client: Any, probe: Any, *, published: dict[str, Any] | None = None) -> Any:
    """The job that trains after `probe` decided `retrain`: the probe's inputs, compute,
    tags and experiment, retrain_policy `always`, the nodes after check_drift, built
    from the pipeline component version the probe was built from."""
    from azure.ai.ml.entities import PipelineJob

    from pipeline.aml_job_graph import TRAINING, per_request_job
    from pipeline.aml_jobs import PROP_RUN_ID

    props = dict(probe.properties or {})
    inputs = {k: getattr(v, "_data", v) for k, v in probe.inputs.items()}
    inputs["retrain_policy"] = "always"
    name = training_name(probe.name)
    own = {k: v for k, v in props.items() if k.startswith("aml_trigger.")}
    own.pop(PROP_DRIFT_PROBE, None)
    job = PipelineJob(
        name=name,
        display_name=name,
        experiment_name=probe.experiment_name,
        inputs=inputs,
        settings=probe.settings,
        tags=dict(probe.tags or {}),
        properties={**own, PROP_RUN_ID: name, PROP_TRAINING_OF: probe.name},
    )
    return per_request_job(
        client,
        job,
        component_id=props[PROP_PIPELINE],
        candidate_count=int(str(inputs.get("candidate_count") or 1)),
        deploy_target=str(inputs.get("deploy_target") or "none"),
        published=published,
        phase=TRAINING,
        probe_job=probe.name,
    )
