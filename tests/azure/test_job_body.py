"""The job body binds every input, as a workspace requires (issue 12, part 3).

The SDK leaves empty-string inputs out of a pipeline job's REST body and the service
then fails the node as "not specified" (azure-sdk-for-python#38892); the wire fake
refuses such a job the same way, so a "" anywhere fails here first.
"""

from __future__ import annotations

import json

import azure.functions as func
import pytest

from pipeline.publish import publish
from pipeline.request import TrainingRequest
from pipeline.runs import run_id_for
from pipeline.settings import Settings, SettingsError
from pipeline.submitter import SubmissionError

COMPONENT_ARM_TAIL = "/components/aml_trigger_training/versions/3"


def _literal(sent) -> dict[str, str]:
    inputs = sent.json()["properties"]["inputs"]
    return {k: v["value"] for k, v in inputs.items() if v["jobInputType"] == "literal"}


def test_the_sdk_leaves_empty_string_inputs_off_the_wire(submitter, fake_azure, wire):
    # The fact the rest of this file guards against, observed on the real SDK.
    from azure.ai.ml import Input
    from azure.ai.ml.entities import PipelineJob

    fake_azure.on("PUT", r"/jobs/[^/?]+\?", wire.echo_job())
    job = PipelineJob(
        name="empty-input",
        component=wire.WS_PATH + COMPONENT_ARM_TAIL,
        inputs={
            "training_data": Input(type="uri_folder", path="azureml://datastores/d/paths/p/"),
            "run_key": "",
        },
    )
    submitter.client().jobs.create_or_update(job, experiment_name="x")

    assert "run_key" not in fake_azure.requests("PUT")[0].json()["properties"]["inputs"]


def test_the_wire_refuses_a_job_that_leaves_a_component_input_without_a_value(
    submitter, fake_azure, wire
):
    from azure.ai.ml.entities import PipelineJob
    from azure.core.exceptions import HttpResponseError

    fake_azure.on("PUT", r"/jobs/[^/?]+\?", wire.echo_job())
    job = PipelineJob(name="no-data", component=wire.WS_PATH + COMPONENT_ARM_TAIL, inputs={})

    with pytest.raises(HttpResponseError) as caught:
        submitter.client().jobs.create_or_update(job, experiment_name="x")

    assert caught.value.status_code == 400
    assert "Assignment for parameter training_data is not specified" in str(caught.value)


def test_a_default_of_empty_string_is_no_value_either(wire):
    # What the pipeline YAML had before: candidate_2 defaulting to "" and the SDK
    # dropping the job's "" leaves it unbound.
    spec = {"candidate_2": {"type": "string", "default": ""}, "dataset_config": {"optional": True}}
    assert wire.unbound_inputs({}, spec) == ["candidate_2"]
    assert wire.unbound_inputs({"candidate_2": {"value": "none"}}, spec) == []


@pytest.mark.parametrize(
    "request_body",
    [
        {},
        {"candidates": [{"num_leaves": 15}, {"num_leaves": 63}, {}, {"learning_rate": 0.1}]},
        {"data": "", "retrain": {"retrain_policy": "on_drift"}},
    ],
    ids=["default", "four-candidates", "whole-container-on-drift"],
)
def test_every_submitted_input_has_a_value(submitter, fake_azure, wire, request_body):
    fake_azure.on("PUT", r"/jobs/[^/?]+\?", wire.echo_job())
    request = TrainingRequest(**request_body)

    submitter.submit(request, run_id=run_id_for(json.dumps(request_body)), trigger="http")

    put = fake_azure.requests("PUT")[0]
    literal = _literal(put)
    expected = set(request.pipeline_inputs(data_uri="x", lineage={})) - {"training_data"}
    assert set(literal) == expected | {"prep_compute", "train_compute"}  # pipeline/compute.py
    assert all(value.strip() for value in literal.values()), literal


# --- deploy targets per backend ---------------------------------------------------------
def test_default_deploy_target_and_endpoint_per_backend(aml_env, monkeypatch):
    target, endpoint = Settings.from_env().deployment_defaults()
    assert target == "none"
    assert endpoint.startswith("porto-seguro-") and 3 <= len(endpoint) <= 32

    monkeypatch.setenv("DEPLOY_TARGET", "aci")
    monkeypatch.setenv("ENDPOINT_NAME", "risk-scoring")
    assert Settings.from_env().deployment_defaults() == ("aci", "risk-scoring")

    monkeypatch.setenv("PIPELINE_BACKEND", "local")
    monkeypatch.delenv("DEPLOY_TARGET")
    monkeypatch.delenv("ENDPOINT_NAME")
    assert Settings.from_env().deployment_defaults() == ("local", "porto-seguro")


def test_deploy_target_local_setting_is_refused_on_the_aml_backend(aml_env, monkeypatch):
    monkeypatch.setenv("DEPLOY_TARGET", "local")
    with pytest.raises(SettingsError, match="DEPLOY_TARGET local .* none, aci, aks"):
        Settings.from_env()


def test_submitter_refuses_deploy_target_local_before_sending(submitter, fake_azure):
    with pytest.raises(SubmissionError, match="deploy_target") as caught:
        submitter.submit(
            TrainingRequest(deploy_target="local"), run_id="run-local-target", trigger="cli"
        )
    assert caught.value.code == "invalid_request"
    assert fake_azure.sent == []


def test_http_refuses_deploy_target_local_with_422_naming_the_field(aml_env, submitter, fake_azure):
    from triggers import http_api, runtime

    runtime.install(runtime.build_service(Settings.from_env(), submitter=submitter))
    try:
        response = http_api.submit_run(
            func.HttpRequest(
                "POST",
                "http://localhost/api/runs",
                headers={"Content-Type": "application/json"},
                body=b'{"deploy_target": "local"}',
            )
        )
    finally:
        runtime.reset()

    assert response.status_code == 422
    error = json.loads(response.get_body())["error"]
    assert error["code"] == "invalid_request"
    assert [d["path"] for d in error["details"]] == ["deploy_target"]
    assert "none, aci, aks" in error["details"][0]["message"]
    assert fake_azure.sent == []


# --- reuse ------------------------------------------------------------------------------
# Steps that read data, the registry or a live endpoint: a datastore path or a model
# name looks unchanged when what is behind it changed, so Azure ML must never reuse
# an earlier job's output for them.
NEVER_REUSED = {"prep", "check_drift", "score_champion", "register", "deploy", "smoke_test"}


def test_steps_reading_data_or_the_registry_are_published_non_deterministic(
    aml_env, fake_azure, fake_credential, workspace
):
    publish(
        Settings.from_env(),
        credential=fake_credential,
        transport=fake_azure,
        retry_total=0,
        progress=lambda _: None,
    )

    deterministic = {}
    for put in fake_azure.requests("PUT", "/components/aml_trigger_"):
        spec = put.json()["properties"]["componentSpec"]
        if spec.get("type") == "command":
            deterministic[spec["name"].removeprefix("aml_trigger_")] = spec.get(
                "is_deterministic", True
            )
    assert {n for n, d in deterministic.items() if d is False} == NEVER_REUSED
    assert deterministic["train"] is not False  # pure function of its inputs
