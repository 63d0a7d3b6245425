"""Batch endpoint mode: a run invokes a pipeline-component deployment."""

from __future__ import annotations

import pytest

from pipeline.request import TrainingRequest
from pipeline.submitter import SubmissionError

SCORING = "https://retrain.westeurope.inference.ml.azure.com/jobs"


@pytest.fixture
def batch_submitter(make_submitter, monkeypatch):
    monkeypatch.setenv("AML_BATCH_ENDPOINT", "retrain")
    monkeypatch.setenv("AML_BATCH_DEPLOYMENT", "training-v3")
    monkeypatch.delenv("AML_PIPELINE_COMPONENT")
    return make_submitter()


def test_invoke_posts_the_inputs_to_the_deployment(batch_submitter, fake_azure, wire):
    base = rf"{wire.WS_PATH}/batchEndpoints/retrain"
    fake_azure.on(
        "GET",
        base + r"/deployments\?",
        (200, {"value": [{"id": base + "/deployments/training-v3", "name": "training-v3"}]}),
    )
    fake_azure.on(
        "GET",
        base + r"\?",
        (200, {"id": base, "name": "retrain", "properties": {"scoringUri": SCORING}}),
    )
    fake_azure.on("POST", r"inference\.ml\.azure\.com/jobs", lambda sent: (200, _batch_job(sent)))

    record = batch_submitter.submit(
        TrainingRequest(data="drops/d1/", params={"num_leaves": 7, "learning_rate": 0.2}),
        run_id="run-b1",
        trigger="timer",
        idempotency_key="timer:2026-11-22T02:00",
    )

    post = fake_azure.requests("POST")[0]
    assert post.url.startswith(SCORING)
    assert post.headers["azureml-model-deployment"] == "training-v3"
    assert post.headers["Authorization"].startswith("Bearer ")
    props = post.json()["properties"]
    inputs = props["inputData"]
    assert inputs["training_data"] == {
        "jobInputType": "UriFolder",
        "uri": "azureml://datastores/incoming/paths/drops/d1/",
    }
    # literals keep their JSON types on this API
    assert inputs["num_leaves"] == {"jobInputType": "Literal", "value": 7}
    assert inputs["learning_rate"] == {"jobInputType": "Literal", "value": 0.2}
    assert inputs["trigger"] == {"jobInputType": "Literal", "value": "timer"}
    assert inputs["run_key"]["value"] == "timer:2026-11-22T02:00"
    assert props["name"] == "run-b1"
    assert props["properties"]["experimentName"] == "aml-trigger"
    assert record.run_id == "run-b1"
    assert record.extra["batch_endpoint"] == "retrain"
    assert record.trigger == "timer"


def test_batch_mode_refuses_compute_targets(batch_submitter, fake_azure):
    with pytest.raises(SubmissionError) as caught:
        batch_submitter.submit(TrainingRequest(compute=["cpu"]), run_id="run-b2", trigger="http")
    assert "compute" in caught.value.message and "AML_BATCH_ENDPOINT" in caught.value.message
    assert fake_azure.sent == []
    with pytest.raises(SubmissionError) as caught:
        batch_submitter.submit(
            TrainingRequest(train_compute="gpu-a"), run_id="run-b3", trigger="http"
        )
    assert caught.value.message.startswith("train_compute: a batch endpoint deployment")
    assert fake_azure.sent == []


def _batch_job(sent) -> dict:
    return {
        "id": "x",
        "name": "run-b1",
        "type": "Microsoft.MachineLearningServices/workspaces/batchEndpoints/jobs",
        "properties": {"status": "NotStarted", "jobType": "Pipeline"},
    }
