"""Batch scoring on Azure ML: one pipeline job of the published batch scoring component.

`aml-trigger publish` registers pipeline/batch_scoring_pipeline.yaml beside the
training pipeline (same version, environment and code snapshot). A batch scoring
job reads a folder of the incoming datastore and writes its predictions next to
it, under `<folder>/_predictions/<job name>/` of the same datastore, so the rows
and their scores sit together (the `_` prefix keeps them out of a later run's
input). The job's status is followed like any run (`aml-trigger show JOB`).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from pipeline.aml_jobs import job_record
from pipeline.aml_submitter import AmlSubmitter
from pipeline.request import normalize_data_prefix
from pipeline.runs import RunRecord
from pipeline.submitter import SubmissionError

BATCH_COMPONENT = "aml_trigger_batch_scoring"
PREDICTIONS_FOLDER = "_predictions"
_ARM_VERSION = re.compile(r"/components/[^/]+/versions/(?P<version>[^/]+)$")


def batch_job_name() -> str:
    return f"batch-score-{uuid.uuid4().hex[:12]}"


def submit_batch_scoring(
    submitter: AmlSubmitter,
    *,
    data: str,
    model_name: str = "porto-seguro-lgbm",
    model_version: str | None = None,
    chunk_rows: int = 50_000,
    compute: str | None = None,
    component_version: str | None = None,
    name: str | None = None,
    experiment: str = "aml-trigger-batch",
) -> RunRecord:
    """Submit the job; SubmissionError names what is missing or what Azure refused."""
    from azure.ai.ml import Input, Output
    from azure.ai.ml.entities import PipelineJob, PipelineJobSettings

    try:
        prefix = normalize_data_prefix(data)
    except ValueError as exc:
        raise SubmissionError("invalid_request", str(exc)) from None
    if model_version is not None and not model_version.isdigit():
        raise SubmissionError(
            "invalid_request", f"model version {model_version!r}: accepted: a number, e.g. 3"
        )
    target = compute or submitter.settings.aml_compute
    if not target:
        raise SubmissionError("invalid_request", "no compute target: give --compute or set "
                              "AML_COMPUTE")  # fmt: skip
    client = submitter.client()
    component_id = _component_id(submitter, client, component_version)
    job_name = name or batch_job_name()
    inputs: dict[str, Any] = {
        "scoring_data": Input(type="uri_folder", path=submitter.data_uri(prefix)),
        "model_name": model_name,
        "chunk_rows": chunk_rows,
    }
    if model_version is not None:
        inputs["model_version"] = model_version
    where = f"{prefix}{PREDICTIONS_FOLDER}/{job_name}/"
    job = PipelineJob(
        name=job_name,
        display_name=job_name,
        component=component_id,
        inputs=inputs,
        outputs={"predictions": Output(type="uri_folder", path=submitter.data_uri(where))},
        settings=PipelineJobSettings(default_compute=target),
        experiment_name=experiment,
        tags={"aml_trigger.trigger": "batch-score", "aml_trigger.model_name": model_name},
    )
    try:
        created = client.jobs.create_or_update(job, experiment_name=experiment)
    except Exception as exc:  # noqa: BLE001 - mapped
        raise submitter._error(exc, f"submitting batch scoring job {job_name}") from None
    record = job_record(created)
    return record.model_copy(
        update={"extra": {**record.extra, "predictions": submitter.data_uri(where)}}
    )


def _component_id(submitter: AmlSubmitter, client: Any, version: str | None) -> str:
    """The batch component's ARM id: the given version, else its latest (one GET)."""
    s = submitter.settings
    if version:
        return (
            f"/subscriptions/{s.aml_subscription_id}/resourceGroups/{s.aml_resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{s.aml_workspace}"
            f"/components/{BATCH_COMPONENT}/versions/{version}"
        )
    try:
        component = client.components.get(BATCH_COMPONENT, label="latest")
    except Exception as exc:  # noqa: BLE001 - mapped
        error = submitter._error(exc, f"looking up pipeline component {BATCH_COMPONENT}")
        if getattr(exc, "status_code", None) == 404:
            error = SubmissionError(
                "not_found",
                f"pipeline component {BATCH_COMPONENT} is not published in workspace "
                f"{s.aml_workspace}: run `aml-trigger publish` first",
            )
        raise error from None
    component_id = component.id or ""
    if not _ARM_VERSION.search(component_id):
        raise SubmissionError("not_found", f"{BATCH_COMPONENT}: Azure ML returned no version")
    return component_id
