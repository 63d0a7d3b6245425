"""Model verification on Azure ML: one pipeline job of the published verify pipeline.

`aml-trigger publish` registers pipeline/verify_model_pipeline.yaml beside the
training pipeline, with the same version, so the verify component is the training
component's name swapped for VERIFY_COMPONENT (a bare name means the latest of
each). The job is named by the run id like a training run, so the ledger,
idempotency (a repeated PUT is "already submitted"), the status routes and the
callback treat it the same way.

The submitted model never runs in the Function App: the job's verify_endpoint node
deploys it (scoring `endpoint`: a throw-away managed online deployment at 0 %
traffic, steps/verify_online.py) or serves it inside its own container on the
cluster (scoring `batch`); either way Azure ML's container runs the model's code.
"""

from __future__ import annotations

from typing import Any

from pipeline.aml_jobs import pipeline_job
from pipeline.submitter import SubmissionError
from pipeline.verification import VerificationRequest

VERIFY_COMPONENT = "aml_trigger_verify_model"
TAG_KIND = "aml_trigger.kind"


def verify_component_id(submitter: Any, client: Any | None) -> tuple[str, str | None]:
    """The verify pipeline component published with AML_PIPELINE_COMPONENT: its ARM id
    (or `azureml:name@latest` when no client is given to look the latest up)."""
    from pipeline.aml_submitter import parse_component

    name, version, arm = parse_component(submitter.settings.aml_pipeline_component or "")
    if arm:
        return arm.replace(f"/components/{name}/", f"/components/{VERIFY_COMPONENT}/"), version
    if version:
        return submitter._component_arm_id(VERIFY_COMPONENT, version), version
    if client is None:
        return f"azureml:{VERIFY_COMPONENT}@latest", None
    return submitter.latest_component(client, VERIFY_COMPONENT)


def build_verify_job(
    submitter: Any,
    request: VerificationRequest,
    *,
    run_id: str,
    trigger: str,
    idempotency_key: str | None,
    component_id: str,
) -> Any:
    compute = request.compute or submitter.settings.aml_compute
    if not compute:
        raise SubmissionError(
            "invalid_request",
            "no compute target: give `compute` in the request or set AML_COMPUTE",
        )
    endpoint = "managed" if request.scoring == "endpoint" else "local"
    values = request.pipeline_inputs(
        data_uri=submitter.data_uri(request.data),
        model_uri=submitter.data_uri(request.model),
        endpoint=endpoint,
    )
    tags = {**submitter._tags(request, trigger, idempotency_key, None), TAG_KIND: "verify"}
    return pipeline_job(
        name=run_id,
        group=run_id,
        component_id=component_id,
        values=values,
        data=dict.fromkeys(FOLDERS, "uri_folder"),
        compute=compute,
        experiment=request.experiment,
        tags=tags,
    )


FOLDERS = ("model", "verification_data")


def submit_verification(
    submitter: Any,
    request: VerificationRequest,
    *,
    run_id: str,
    trigger: str,
    idempotency_key: str | None,
) -> Any:
    from pipeline.aml_client import WORKSPACE_SETTINGS, require_settings

    require_settings(submitter.settings, [*WORKSPACE_SETTINGS, "AML_PIPELINE_COMPONENT"])
    client = submitter.client()
    component_id, _ = verify_component_id(submitter, client)
    job = build_verify_job(
        submitter,
        request,
        run_id=run_id,
        trigger=trigger,
        idempotency_key=idempotency_key,
        component_id=component_id,
    )
    record = submitter._create(client, job, request.experiment)
    return record.model_copy(update={"request": request.model_dump(mode="json")})


def describe_verification(
    submitter: Any, request: VerificationRequest, *, run_id: str, trigger: str
) -> dict:
    """The verify job as Azure ML job YAML; sends nothing."""
    import yaml

    from pipeline.aml_client import WORKSPACE_SETTINGS, require_settings

    require_settings(submitter.settings, [*WORKSPACE_SETTINGS, "AML_PIPELINE_COMPONENT"])
    component_id, _ = verify_component_id(submitter, None)
    job = build_verify_job(
        submitter, request, run_id=run_id, trigger=trigger, idempotency_key=None,
        component_id=component_id,
    )  # fmt: skip
    return {
        "backend": "aml",
        "mode": "pipeline_job",
        "kind": "verify",
        "run_id": run_id,
        "experiment": request.experiment,
        "job_yaml": yaml.safe_dump(job._to_dict(), sort_keys=False),
    }
