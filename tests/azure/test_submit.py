"""AmlSubmitter at the wire: what a submission PUTs, and what a repeat does."""

from __future__ import annotations

import pytest

from pipeline.request import TrainingRequest
from pipeline.runs import run_id_for
from pipeline.submitter import SubmissionError

COMPONENT_ID_TAIL = "/components/aml_trigger_training/versions/3"


def test_submit_puts_one_pipeline_job_from_the_registered_component(submitter, fake_azure, wire):
    fake_azure.on("PUT", r"/jobs/[^/?]+\?", wire.echo_job())
    request = TrainingRequest(
        data="drops/2026-11-22/",
        params={"learning_rate": 0.1, "num_leaves": 63},
        gate={"gate_metric": "pr_auc"},
        reason="new drop",
        tags={"team": "risk"},
    )
    key = "incoming/drops/2026-11-22/_SUCCESS/0x8DD"
    run_id = run_id_for(key)

    record = submitter.submit(request, run_id=run_id, trigger="blob", idempotency_key=key)

    # The published pipeline component is read (with the workspace, as the SDK does),
    # then one PUT of a job built from its step components.
    assert [(s.method, s.path.rsplit("/", 1)[-1]) for s in fake_azure.sent] == [
        ("GET", "3"), ("GET", wire.WS), ("PUT", run_id),
    ]  # fmt: skip
    assert fake_azure.sent[0].path == wire.WS_PATH + COMPONENT_ID_TAIL
    put = fake_azure.sent[-1]
    assert put.path == f"{wire.WS_PATH}/jobs/{run_id}"
    body = put.json()["properties"]
    assert body["jobType"] == "Pipeline"
    assert "componentId" not in body  # the nodes name the published step components
    assert body["jobs"]["train"]["componentId"].startswith(
        wire.WS_PATH + "/components/aml_trigger_train/versions/"
    )
    assert body["experimentName"] == "aml-trigger"
    assert body["settings"]["default_compute"] == wire.WS_PATH + "/computes/cpu-cluster"
    inputs = body["inputs"]
    assert inputs["training_data"] == {
        "jobInputType": "uri_folder",
        "uri": "azureml://datastores/incoming/paths/drops/2026-11-22/",
    }
    literal = {k: v["value"] for k, v in inputs.items() if v["jobInputType"] == "literal"}
    assert literal["learning_rate"] == "0.1"
    assert literal["num_leaves"] == "63"
    assert literal["gate_metric"] == "pr_auc"
    assert literal["class_weight"] == "none"
    assert literal["trigger"] == "blob"
    assert literal["run_key"] == key
    assert literal["data_location"] == "incoming/drops/2026-11-22/"
    assert literal["code_version"] == "3"  # lineage: the component version that runs
    # Every input is bound by the job itself, none with "": the SDK leaves "" off the
    # wire and the service then fails the node (azure-sdk-for-python#38892); unused
    # candidate slots carry the steps' "none".
    computes = {"prep_compute", "train_compute"}  # pipeline/compute.py
    assert set(inputs) == set(request.pipeline_inputs(data_uri="x", lineage={})) | computes
    assert "" not in literal.values()
    assert wire.unbound_inputs(inputs, {name: {} for name in inputs}) == []
    assert literal["candidate_count"] == "1"
    assert [literal[f"candidate_{slot}"] for slot in range(4)] == ["none"] * 4
    assert literal["deploy_target"] == "none"  # the aml backend's default
    assert body["tags"] == {
        "team": "risk",
        "aml_trigger.trigger": "blob",
        "aml_trigger.idempotency_key": key,
        "aml_trigger.reason": "new drop",
        "aml_trigger.code_version": "3",
    }
    assert body["properties"]["aml_trigger.run_id"] == run_id
    assert record.run_id == run_id
    assert record.status == "queued"
    assert record.backend == "aml"
    assert record.trigger == "blob"
    assert record.idempotency_key == key
    assert record.extra["compute"] == "cpu-cluster"
    assert record.request["data"] == "drops/2026-11-22/"
    assert not fake_azure.unrouted


def test_submit_carries_the_candidates_as_pipeline_inputs(submitter, fake_azure, wire):
    fake_azure.on("PUT", r"/jobs/[^/?]+\?", wire.echo_job())
    request = TrainingRequest(
        params={"num_boost_round": 500},
        candidates=[{"num_leaves": 15}, {"num_leaves": 63, "learning_rate": 0.1}, {}],
    )
    run_id = run_id_for("http:sweep")

    record = submitter.submit(request, run_id=run_id, trigger="http")

    inputs = fake_azure.requests("PUT")[0].json()["properties"]["inputs"]
    literal = {k: v["value"] for k, v in inputs.items() if v["jobInputType"] == "literal"}
    assert literal["candidate_count"] == "3"
    assert literal["candidate_0"] == "num_leaves=15"
    assert literal["candidate_1"] == "learning_rate=0.1,num_leaves=63"
    # Slot 2 trains `params` unchanged, slot 3 is unused: both say so with "none".
    assert literal["candidate_2"] == literal["candidate_3"] == "none"
    assert literal["num_boost_round"] == "500"
    assert literal["num_threads"] == "0"  # on Azure ML every slot has a node of its own
    assert record.request["candidates"] == [
        {"num_leaves": 15}, {"learning_rate": 0.1, "num_leaves": 63}, {},
    ]  # fmt: skip


def test_repeat_submit_after_409_returns_the_existing_job(submitter, fake_azure, wire):
    run_id = run_id_for("http:abc")
    fake_azure.on(
        "PUT",
        rf"/jobs/{run_id}\?",
        wire.error(409, "Conflict", f"Job {run_id} already exists"),
    )
    fake_azure.on(
        "GET",
        rf"/jobs/{run_id}\?",
        (200, wire.job(run_id, "Running", tags={"aml_trigger.trigger": "http"})),
    )

    record = submitter.submit(
        TrainingRequest(), run_id=run_id, trigger="http", idempotency_key="http:abc"
    )

    assert [s.method for s in fake_azure.requests(contains="/jobs/")] == ["PUT", "GET"]
    assert record.run_id == run_id
    assert record.status == "running"
    assert record.extra["already_submitted"] is True


def test_repeat_submit_refused_as_user_error_400_also_returns_the_existing_job(
    submitter, fake_azure, wire
):
    run_id = run_id_for("blob:x")
    message = (
        "A job with this name already exists. If you are trying to create a new job, "
        "use a different name."
    )
    fake_azure.on("PUT", rf"/jobs/{run_id}\?", wire.error(400, "UserError", message))
    fake_azure.on("GET", rf"/jobs/{run_id}\?", (200, wire.job(run_id, "Completed")))

    record = submitter.submit(TrainingRequest(), run_id=run_id, trigger="blob")

    assert record.status == "completed" and record.extra["already_submitted"] is True


def test_other_400s_are_errors_not_duplicates(submitter, fake_azure, wire):
    fake_azure.on("PUT", r"/jobs/", wire.error(400, "UserError", "Input learning_rate invalid"))
    with pytest.raises(SubmissionError) as caught:
        submitter.submit(TrainingRequest(), run_id="run-bad", trigger="http")
    assert caught.value.code == "aml_error"
    assert "HTTP 400" in caught.value.message and "learning_rate" in caught.value.message
    assert fake_azure.requests("GET", "/jobs/") == []  # not read back as a duplicate


def test_several_computes_fan_out_into_one_job_each_in_one_group(submitter, fake_azure, wire):
    fake_azure.on("PUT", r"/jobs/[^/?]+\?", wire.echo_job())
    run_id = "run-compare-1"

    record = submitter.submit(
        TrainingRequest(compute=["cpu-small", "cpu-large"]), run_id=run_id, trigger="http"
    )

    puts = fake_azure.requests("PUT")
    assert [p.path.rsplit("/", 1)[-1] for p in puts] == [
        "run-compare-1-cpu-small",
        "run-compare-1-cpu-large",
    ]
    for put, compute in zip(puts, ["cpu-small", "cpu-large"], strict=True):
        body = put.json()["properties"]
        assert body["settings"]["default_compute"].endswith(f"/computes/{compute}")
        assert body["properties"]["aml_trigger.comparison_group"] == run_id
    assert record.run_id == run_id
    assert [j["compute"] for j in record.extra["jobs"]] == ["cpu-small", "cpu-large"]


def test_a_bare_component_name_submits_its_latest_version(submitter, fake_azure, wire, monkeypatch):
    from pipeline.settings import Settings

    monkeypatch.setenv("AML_PIPELINE_COMPONENT", "aml_trigger_training")
    submitter.settings = Settings.from_env()
    latest = f"{wire.WS_PATH}/components/aml_trigger_training/versions/0a1b2c-5d6e"
    fake_azure.on(
        "GET",
        r"/components/aml_trigger_training/versions\?",
        (
            200,
            {
                "value": [
                    {
                        "id": latest,
                        "name": "0a1b2c-5d6e",
                        "properties": {
                            "componentSpec": {"name": "aml_trigger_training", "type": "pipeline"}
                        },
                    }
                ]
            },
        ),
    )
    fake_azure.on("PUT", r"/jobs/[^/?]+\?", wire.echo_job())
    wire.route_published_pipeline(fake_azure, "0a1b2c-5d6e")

    submitter.submit(TrainingRequest(), run_id="run-latest", trigger="cli")

    assert fake_azure.requests("GET", "/components/aml_trigger_training/versions/0a1b2c-5d6e")
    body = fake_azure.requests("PUT")[0].json()["properties"]
    assert set(body["jobs"]) >= {"prep", "train", "register"}
    assert body["inputs"]["code_version"]["value"] == "0a1b2c-5d6e"


def test_missing_settings_are_named_together_before_any_request(home, fake_azure):
    from pipeline.aml_submitter import AmlSubmitter
    from pipeline.settings import Settings

    submitter = AmlSubmitter(
        Settings.from_env({"PIPELINE_BACKEND": "aml", "AML_WORKSPACE": "ws"}),
        transport=fake_azure,
    )
    with pytest.raises(SubmissionError) as caught:
        submitter.submit(TrainingRequest(), run_id="run-x1", trigger="cli")

    assert caught.value.code == "not_configured"
    for name in ("AML_SUBSCRIPTION_ID", "AML_RESOURCE_GROUP", "AML_PIPELINE_COMPONENT"):
        assert name in caught.value.message
    assert "AML_WORKSPACE" not in caught.value.message
    assert fake_azure.sent == []


def test_no_compute_anywhere_is_refused_naming_both_places(submitter, fake_azure, monkeypatch):
    from pipeline.settings import Settings

    monkeypatch.delenv("AML_COMPUTE")
    submitter.settings = Settings.from_env()
    with pytest.raises(SubmissionError) as caught:
        submitter.submit(TrainingRequest(), run_id="run-nocompute", trigger="cli")
    assert "compute" in caught.value.message and "AML_COMPUTE" in caught.value.message
    assert fake_azure.requests("PUT") == []


def test_dry_run_yaml_loads_with_load_job(submitter, fake_azure, tmp_path):
    from azure.ai.ml import load_job

    described = submitter.describe(
        TrainingRequest(data="drops/a/", params={"num_leaves": 15}),
        run_id="run-dry",
        trigger="http",
    )

    assert fake_azure.sent == []
    assert described["nodes"] == [
        "prep", "check_drift", "train", "score_champion", "select_best", "evaluate", "register",
    ]  # fmt: skip
    path = tmp_path / "job.yaml"
    path.write_text(described["job_yaml"])
    job = load_job(path)
    assert job.name == "run-dry"
    assert job.type == "pipeline"
    assert job.component.endswith("/components/aml_trigger_training/versions/3")
    assert job.inputs["training_data"].path == "azureml://datastores/incoming/paths/drops/a/"
    assert job.inputs["num_leaves"]._data == 15
    assert job.settings.default_compute == "cpu-cluster"


def test_dry_run_of_a_bare_component_name_loads_and_of_a_fan_out_lists_each_job(
    submitter, fake_azure, tmp_path, monkeypatch
):
    from azure.ai.ml import load_job

    from pipeline.settings import Settings

    monkeypatch.setenv("AML_PIPELINE_COMPONENT", "aml_trigger_training")
    submitter.settings = Settings.from_env()
    described = submitter.describe(
        TrainingRequest(compute=["cpu-a", "cpu-b"]), run_id="run-dry2", trigger="cli"
    )

    assert fake_azure.sent == []
    assert [j["name"] for j in described["jobs"]] == ["run-dry2-cpu-a", "run-dry2-cpu-b"]
    for index, job in enumerate(described["jobs"]):
        path = tmp_path / f"job{index}.yaml"
        path.write_text(job["job_yaml"])
        loaded = load_job(path)
        assert loaded.component.endswith("aml_trigger_training@latest")
        assert loaded.settings.default_compute == job["compute"]
