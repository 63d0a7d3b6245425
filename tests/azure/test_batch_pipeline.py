"""The batch scoring pipeline on Azure ML, at the wire: publish registers it beside the
training pipeline, and a batch job PUTs the registered component with the data folder
in and the predictions next to it."""

from __future__ import annotations

import pytest
import yaml
from azure.ai.ml import load_component

from pipeline.batch_jobs import submit_batch_scoring
from pipeline.publish import BATCH_PIPELINE_YAML, PIPELINE_YAML, publish, publish_version
from pipeline.settings import Settings
from pipeline.submitter import SubmissionError


def training_components() -> list[str]:
    """The training pipeline's command components, in the order publish registers them."""
    doc = yaml.safe_load(PIPELINE_YAML.read_text())
    names = []
    for job in doc["jobs"].values():
        name = yaml.safe_load((PIPELINE_YAML.parent / job["component"]).read_text())["name"]
        if name not in names:
            names.append(name)
    return names


def test_the_batch_pipeline_and_its_component_load_with_the_sdk():
    pipeline = load_component(BATCH_PIPELINE_YAML)
    assert pipeline.name == "aml_trigger_batch_scoring"
    assert list(pipeline.jobs) == ["batch_score"]
    assert pipeline.jobs["batch_score"].component.code == "../.."
    step = load_component(BATCH_PIPELINE_YAML.parent / "components" / "batch_score.yaml")
    assert step.name == "aml_trigger_batch_score"
    assert step.outputs["predictions"].type == "uri_folder"
    assert pipeline.inputs["model_version"].optional is True
    assert pipeline.inputs["scoring_data"].type == "uri_folder"


def _publish(fake_azure, fake_credential):
    return publish(
        Settings.from_env(),
        credential=fake_credential,
        transport=fake_azure,
        retry_total=0,
        extra_pipelines=(BATCH_PIPELINE_YAML,),
        progress=lambda _: None,
    )


def test_publish_registers_the_batch_pipeline_after_the_training_one(
    aml_env, fake_azure, fake_credential, workspace, wire
):
    result = _publish(fake_azure, fake_credential)

    version = publish_version()
    puts = [p.path.split("/workspaces/ws-ml/")[1] for p in fake_azure.requests("PUT")]
    assert puts == [
        f"environments/aml-trigger-steps/versions/{version}",
        *[f"components/{name}/versions/{version}" for name in training_components()],
        f"components/aml_trigger_training/versions/{version}",
        f"components/aml_trigger_batch_score/versions/{version}",
        f"components/aml_trigger_batch_scoring/versions/{version}",
    ]
    batch = fake_azure.requests("PUT")[-1].json()["properties"]["componentSpec"]
    assert batch["jobs"]["batch_score"]["componentId"].endswith(
        f"/components/aml_trigger_batch_score/versions/{version}"
    )
    step = fake_azure.requests("PUT")[-2].json()["properties"]["componentSpec"]
    assert step["code"] == f"azureml:{workspace}"  # the same snapshot as the training steps
    assert step["environment"].endswith(f"/environments/aml-trigger-steps/versions/{version}")
    # What triggers submit stays the training pipeline.
    assert result.pipeline_component == f"aml_trigger_training:{version}"
    before = len(fake_azure.requests("PUT"))
    again = _publish(fake_azure, fake_credential)
    assert again.created == [] and len(fake_azure.requests("PUT")) == before
    assert not fake_azure.unrouted, [u.url for u in fake_azure.unrouted]


def test_a_batch_job_reads_the_folder_and_writes_predictions_next_to_it(
    submitter, fake_azure, wire
):
    latest = f"{wire.WS_PATH}/components/aml_trigger_batch_scoring/versions/0.1.0-abc"
    fake_azure.on(
        "GET",
        r"/components/aml_trigger_batch_scoring/versions\?",
        (
            200,
            {
                "value": [
                    {
                        "id": latest,
                        "name": "0.1.0-abc",
                        "properties": {
                            "componentSpec": {
                                "name": "aml_trigger_batch_scoring",
                                "type": "pipeline",
                            }
                        },
                    }
                ]
            },
        ),
    )
    fake_azure.on("PUT", r"/jobs/[^/?]+\?", wire.echo_job())

    record = submit_batch_scoring(
        submitter, data="new/2026-11-26", model_version="4", name="batch-score-t1"
    )

    put = fake_azure.requests("PUT")[0]
    assert put.path == f"{wire.WS_PATH}/jobs/batch-score-t1"
    body = put.json()["properties"]
    assert body["componentId"] == latest
    assert body["settings"]["default_compute"] == wire.WS_PATH + "/computes/cpu-cluster"
    assert body["inputs"]["scoring_data"] == {
        "jobInputType": "uri_folder",
        "uri": "azureml://datastores/incoming/paths/new/2026-11-26/",
    }
    literal = {k: v["value"] for k, v in body["inputs"].items() if v["jobInputType"] == "literal"}
    assert literal == {"model_name": "porto-seguro-lgbm", "chunk_rows": "50000",
                       "model_version": "4"}  # fmt: skip
    out = body["outputs"]["predictions"]
    assert out["jobOutputType"] == "uri_folder"
    assert out["uri"] == (
        "azureml://datastores/incoming/paths/new/2026-11-26/_predictions/batch-score-t1/"
    )
    assert record.run_id == "batch-score-t1" and record.status == "queued"
    assert record.extra["predictions"] == out["uri"]
    assert not fake_azure.unrouted


def test_the_champion_is_the_default_and_an_unpublished_component_says_publish(
    submitter, fake_azure, wire
):
    fake_azure.on(
        "GET",
        r"/components/aml_trigger_batch_scoring/versions\?",
        wire.error(404, "NotFound", "not found"),
    )
    with pytest.raises(SubmissionError) as caught:
        submit_batch_scoring(submitter, data="new/")
    assert "run `aml-trigger publish` first" in caught.value.message
    assert fake_azure.requests("PUT") == []

    fake_azure.on("PUT", r"/jobs/[^/?]+\?", wire.echo_job())
    submit_batch_scoring(submitter, data="new/", component_version="7", name="batch-score-t2")
    body = fake_azure.requests("PUT")[0].json()["properties"]
    assert body["componentId"].endswith("/components/aml_trigger_batch_scoring/versions/7")
    assert "model_version" not in body["inputs"]  # absent: the step scores with the champion


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"data": "https://other/acct/"}, "URLs and other accounts are not accepted"),
        ({"data": "new/", "model_version": "latest"}, "accepted: a number"),
    ],
)
def test_bad_arguments_are_refused_before_any_request(submitter, fake_azure, kwargs, fragment):
    with pytest.raises(SubmissionError) as caught:
        submit_batch_scoring(submitter, **kwargs)
    assert fragment in caught.value.message
    assert fake_azure.sent == []
