"""POST /api/verifications on the aml backend at the wire: one job of the published
verify pipeline, named by the run id, through the same ledger and idempotency as a
training run."""

from __future__ import annotations

import json

import pytest
from azure.ai.ml import load_component

from pipeline.publish import VERIFY_PIPELINE_YAML
from pipeline.settings import Settings
from triggers.events import HttpSubmission
from triggers.runtime import build_service
from triggers.service import Accepted, DryRun

BODY = {"model": "models/byo-1/", "data": "verify/2026-12/", "gate": {"gate_min_score": 0.55},
        "tags": {"originator": "ds-team"}}  # fmt: skip


@pytest.fixture
def service(submitter):
    return build_service(Settings.from_env(), submitter=submitter)


def _post(service, body=BODY, key="verify-1"):
    raw = json.dumps(body).encode()
    return service.submit_verification(
        HttpSubmission(body=raw, idempotency_key=key, content_type="application/json")
    )


def _literals(put) -> dict[str, str]:
    inputs = put.json()["properties"]["inputs"]
    return {k: v["value"] for k, v in inputs.items() if v["jobInputType"] == "literal"}


def test_a_verification_is_one_job_of_the_published_verify_pipeline(service, fake_azure, wire):
    fake_azure.on("PUT", r"/jobs/[^/?]+\?", wire.echo_job())

    outcome = _post(service)

    assert isinstance(outcome, Accepted) and outcome.created
    (put,) = fake_azure.requests("PUT", "/jobs/")
    assert put.path == f"{wire.WS_PATH}/jobs/{outcome.run.run_id}"
    body = put.json()["properties"]
    assert body["componentId"] == f"{wire.WS_PATH}/components/aml_trigger_verify_model/versions/3"
    assert body["settings"]["default_compute"].endswith("/computes/cpu-cluster")
    inputs = body["inputs"]
    assert inputs["model"] == {
        "jobInputType": "uri_folder",
        "uri": "azureml://datastores/incoming/paths/models/byo-1/",
    }
    assert inputs["verification_data"]["uri"] == (
        "azureml://datastores/incoming/paths/verify/2026-12/"
    )
    literal = _literals(put)
    assert literal["endpoint"] == "managed"  # a throw-away managed online deployment
    assert literal["model_uri"] == "azureml://datastores/incoming/paths/models/byo-1/"
    assert literal["gate_min_score"] == "0.55"
    assert body["tags"]["aml_trigger.kind"] == "verify"
    assert body["tags"]["aml_trigger.originator"] == "ds-team"
    assert outcome.run.request["kind"] == "verify"
    assert not fake_azure.unrouted


def test_a_repeated_verification_returns_the_same_run_without_a_second_job(
    service, fake_azure, wire
):
    fake_azure.on("PUT", r"/jobs/[^/?]+\?", wire.echo_job())
    first = _post(service)
    fake_azure.on("GET", rf"/jobs/{first.run.run_id}\?", (200, wire.job(first.run.run_id)))

    again = _post(service)

    assert isinstance(again, Accepted) and not again.created
    assert again.run.run_id == first.run.run_id
    assert len(fake_azure.requests("PUT", "/jobs/")) == 1


def test_batch_scoring_serves_the_model_inside_the_job_on_the_cluster(service, fake_azure, wire):
    fake_azure.on("PUT", r"/jobs/[^/?]+\?", wire.echo_job())

    _post(service, {**BODY, "scoring": "batch", "compute": "cpu-verify"}, key="verify-2")

    put = fake_azure.requests("PUT", "/jobs/")[0]
    literal = _literals(put)
    assert literal["endpoint"] == "local"
    assert "model_uri" not in literal
    assert put.json()["properties"]["settings"]["default_compute"].endswith("/computes/cpu-verify")


def test_a_dry_run_shows_the_verify_job_and_sends_nothing(service, fake_azure):
    outcome = _post(service, {**BODY, "dry_run": True}, key="verify-3")

    assert isinstance(outcome, DryRun)
    assert outcome.description["kind"] == "verify"
    assert "aml_trigger_verify_model" in outcome.description["job_yaml"]
    assert fake_azure.sent == []


def test_the_verify_pipeline_passes_the_endpoint_kind_to_its_test_endpoint_step():
    pipeline = load_component(VERIFY_PIPELINE_YAML)
    node = pipeline.jobs["verify_endpoint"]
    assert set(pipeline.inputs) >= {"endpoint", "model_uri"}
    assert "--endpoint ${{inputs.endpoint}}" in node.component.command
    assert pipeline.inputs["model_uri"].optional is True


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ({"scoring": "online"}, "scoring", "'endpoint' or 'batch'"),
        ({"compute": "1cpu"}, "compute", "not a valid name"),
    ],
)
def test_bad_scoring_or_compute_is_refused_naming_the_field(service, fake_azure, extra, field,
                                                            message):  # fmt: skip
    from triggers.validation import RequestError

    with pytest.raises(RequestError) as caught:
        _post(service, {**BODY, **extra}, key="verify-bad")
    assert caught.value.status == 422
    details = caught.value.details
    assert [d["path"] for d in details] == [field]
    assert message in details[0]["message"]
    assert fake_azure.sent == []


def test_publish_registers_the_verify_pipeline_with_the_training_version(
    aml_env, fake_azure, fake_credential, workspace, wire
):
    from pipeline.publish import BATCH_PIPELINE_YAML, publish, publish_version

    publish(
        Settings.from_env(),
        credential=fake_credential,
        transport=fake_azure,
        retry_total=0,
        extra_pipelines=(BATCH_PIPELINE_YAML, VERIFY_PIPELINE_YAML),
        progress=lambda _: None,
    )

    version = publish_version()
    puts = [p.path.split("/workspaces/ws-ml/")[1] for p in fake_azure.requests("PUT")]
    assert puts[-3:] == [
        f"components/aml_trigger_verify_endpoint/versions/{version}",
        f"components/aml_trigger_verify_gate/versions/{version}",
        f"components/aml_trigger_verify_model/versions/{version}",
    ]
    spec = fake_azure.requests("PUT")[-1].json()["properties"]["componentSpec"]
    assert spec["jobs"]["verify_endpoint"]["componentId"].endswith(
        f"/components/aml_trigger_verify_endpoint/versions/{version}"
    )
    # The training pipeline binds its nodes' compute to the step-group inputs.
    training = next(
        p.json()["properties"]["componentSpec"]
        for p in fake_azure.requests("PUT", "/components/aml_trigger_training/")
    )
    assert training["jobs"]["train_2"]["computeId"] == "${{parent.inputs.train_compute}}"
    assert training["jobs"]["prep"]["computeId"] == "${{parent.inputs.prep_compute}}"
    assert "computeId" not in training["jobs"]["evaluate"]
    assert not fake_azure.unrouted, [u.url for u in fake_azure.unrouted]
