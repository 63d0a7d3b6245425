"""A compute per step group at the wire, and a preempted run that says so."""

from __future__ import annotations

import pytest
from azure.ai.ml import load_component
from pydantic import ValidationError

from pipeline.compute import PREP_NODES, TRAIN_NODES
from pipeline.publish import PIPELINE_YAML
from pipeline.request import TrainingRequest
from pipeline.settings import Settings, SettingsError
from triggers.notify import run_summary

API = "https://westeurope.api.azureml.ms"


def _literals(put) -> dict[str, str]:
    inputs = put.json()["properties"]["inputs"]
    return {k: v["value"] for k, v in inputs.items() if v["jobInputType"] == "literal"}


def test_the_pipeline_binds_prep_and_train_nodes_to_their_compute_inputs():
    pipeline = load_component(PIPELINE_YAML)
    for name, node in pipeline.jobs.items():
        if name in PREP_NODES:
            assert node.compute == "${{parent.inputs.prep_compute}}"
        elif name in TRAIN_NODES:
            assert node.compute == "${{parent.inputs.train_compute}}"
        else:
            assert node.compute is None  # the job's default compute


def test_the_request_computes_go_into_the_job_body(submitter, fake_azure, wire):
    fake_azure.on("PUT", r"/jobs/[^/?]+\?", wire.echo_job())
    request = TrainingRequest(prep_compute="cpu-small", train_compute="cpu-big")

    submitter.submit(request, run_id="run-steps", trigger="http")

    body = fake_azure.requests("PUT", "/jobs/")[0].json()["properties"]
    assert body["settings"]["default_compute"].endswith("/computes/cpu-cluster")
    literal = _literals(fake_azure.requests("PUT", "/jobs/")[0])
    assert (literal["prep_compute"], literal["train_compute"]) == ("cpu-small", "cpu-big")


def test_app_settings_fill_what_the_request_leaves_out(
    aml_env, monkeypatch, fake_azure, fake_credential, wire
):
    from pipeline.aml_submitter import AmlSubmitter

    monkeypatch.setenv("AML_PREP_COMPUTE", "cpu-prep")
    monkeypatch.setenv("AML_TRAIN_COMPUTE", "cpu-train")
    fake_azure.on("PUT", r"/jobs/[^/?]+\?", wire.echo_job())
    submitter = AmlSubmitter(
        Settings.from_env(), credential=fake_credential, transport=fake_azure, retry_total=0
    )

    submitter.submit(TrainingRequest(train_compute="gpu-a"), run_id="run-set", trigger="http")
    submitter.submit(TrainingRequest(), run_id="run-def", trigger="http")

    first, second = (_literals(p) for p in fake_azure.requests("PUT", "/jobs/"))
    assert (first["prep_compute"], first["train_compute"]) == ("cpu-prep", "gpu-a")
    assert (second["prep_compute"], second["train_compute"]) == ("cpu-prep", "cpu-train")


def test_without_any_setting_every_group_runs_on_the_run_compute(submitter, fake_azure, wire):
    fake_azure.on("PUT", r"/jobs/[^/?]+\?", wire.echo_job())
    submitter.submit(TrainingRequest(), run_id="run-one", trigger="http")
    literal = _literals(fake_azure.requests("PUT", "/jobs/")[0])
    assert (literal["prep_compute"], literal["train_compute"]) == ("cpu-cluster", "cpu-cluster")


def test_a_fan_out_compares_training_computes_with_prep_on_one_cluster(submitter, fake_azure, wire):
    fake_azure.on("PUT", r"/jobs/[^/?]+\?", wire.echo_job())
    request = TrainingRequest(compute=["cpu-big", "gpu-a"], prep_compute="cpu-small")

    record = submitter.submit(request, run_id="run-cmp", trigger="http")

    puts = fake_azure.requests("PUT", "/jobs/")
    assert [p.path.rsplit("/", 1)[-1] for p in puts] == ["run-cmp-cpu-big", "run-cmp-gpu-a"]
    assert [_literals(p)["train_compute"] for p in puts] == ["cpu-big", "gpu-a"]
    assert [_literals(p)["prep_compute"] for p in puts] == ["cpu-small", "cpu-small"]
    assert [j["compute"] for j in record.extra["jobs"]] == ["cpu-big", "gpu-a"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"train_compute": "gpu a"}, "compute target 'gpu a' is not a valid name"),
        ({"prep_compute": "1cpu"}, "compute target '1cpu' is not a valid name"),
        ({"compute": ["a1", "b1"], "train_compute": "c1"}, "train_compute with several"),
        ({"prep_compute": 3}, "Input should be a valid string"),
    ],
)
def test_bad_step_computes_are_refused_naming_the_field(body, message):
    with pytest.raises(ValidationError) as caught:
        TrainingRequest(**body)
    assert message in str(caught.value)
    assert next(iter(body)) in str(caught.value) or "train_compute" in str(caught.value)


def test_a_bad_compute_setting_is_named(monkeypatch, home):
    monkeypatch.setenv("AML_TRAIN_COMPUTE", "gpu cluster")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env()
    assert "AML_TRAIN_COMPUTE" in str(caught.value)


# --- preemption ----------------------------------------------------------------------
PREEMPTED = (
    "AzureMLCompute job failed. PreemptionError: Nodes of this job got pre-empted. Check if "
    "the run has failed or restarted. Reason: Received pre-emption warning signal"
)


def _run_history(fake_azure, wire, job: str = "run-pre", *, child_error: str | None):
    """The workspace's run history service as the SDK finds it: the workspace names a
    discovery URL, which names the API host; children and run details live there."""
    fake_azure.on(
        "GET",
        rf"/workspaces/{wire.WS}\?",
        (200, {"id": wire.WS_PATH, "name": wire.WS, "location": "westeurope",
               "properties": {"discoveryUrl": f"{API}/discovery"}}),
    )  # fmt: skip
    fake_azure.on("GET", r"/discovery$", (200, {"api": API, "history": API}))
    child = {"runId": f"{job}-train", "status": "Failed", "displayName": "train",
             "parentRunId": job, "runType": "azureml.StepRun"}  # fmt: skip
    fake_azure.on("GET", rf"/runs/{job}/children", (200, {"value": [child]}))
    fake_azure.on(
        "GET",
        rf"/runs/{job}/details",
        (200, {"runId": job, "status": "Failed",
               "error": {"error": {"code": "UserError",
                                   "message": "Pipeline has failed child jobs."}}}),
    )  # fmt: skip
    details = {"runId": f"{job}-train", "status": "Failed"}
    if child_error:
        details["error"] = {"error": {"code": "UserError", "message": child_error}}
    fake_azure.on("GET", rf"/runs/{job}-train/details", (200, details))


def _submitted_then_failed(submitter, fake_azure, wire, name="run-pre"):
    """A job as submitted (the echo of its PUT), now Failed."""
    stored = {}

    def put(sent):
        status, body = wire.echo_job()(sent)
        stored[body["name"]] = body
        return (status, body)

    fake_azure.on("PUT", r"/jobs/[^/?]+\?", put)
    submitter.submit(TrainingRequest(data="d/", train_compute="gpu-spot"), run_id=name,
                     trigger="http", idempotency_key="k-pre")  # fmt: skip
    failed = {**stored[name], "properties": {**stored[name]["properties"], "status": "Failed"}}
    fake_azure.on("GET", rf"/jobs/{name}\?", (200, failed))
    return stored


def test_a_preempted_run_is_submitted_again_under_the_same_run_id(submitter, fake_azure, wire):
    stored = _submitted_then_failed(submitter, fake_azure, wire)
    _run_history(fake_azure, wire, child_error=PREEMPTED)
    fake_azure.on("GET", r"/jobs/run-pre-r1\?", wire.error(404, "NotFound", "no such job"))

    record = submitter.get("run-pre")

    first, retry = fake_azure.requests("PUT", "/jobs/")
    assert retry.path.endswith("/jobs/run-pre-r1")
    before, after = first.json()["properties"], retry.json()["properties"]
    # The same job again: its nodes (built per request, pipeline/aml_job_graph.py).
    assert after.get("componentId") == before.get("componentId")
    assert after["jobs"] == before["jobs"]
    assert after["inputs"] == before["inputs"]  # train_compute gpu-spot and all
    assert after["settings"] == before["settings"]
    assert after["properties"]["aml_trigger.retry_of"] == "run-pre"
    assert after["properties"]["aml_trigger.run_id"] == "run-pre-r1"
    assert after["properties"]["aml_trigger.comparison_group"] == "run-pre"
    assert "services" not in after or not after["services"]
    assert record.run_id == "run-pre"
    assert record.status == "queued"  # the retry, not the failure
    assert record.extra["job_name"] == "run-pre-r1"
    assert record.extra["preemption_retries"] == 1
    assert "run-pre-r1" in stored

    # The next status check follows the retry; nothing is submitted twice.
    fake_azure.on("GET", r"/jobs/run-pre-r1\?", (200, wire.job("run-pre-r1", "Running")))
    assert submitter.get("run-pre").status == "running"
    assert len(fake_azure.requests("PUT", "/jobs/")) == 2

    fake_azure.on("POST", r"/jobs/run-pre-r1/cancel", (202, None))
    fake_azure.on("GET", r"/jobs/run-pre-r1\?", (200, wire.job("run-pre-r1", "CancelRequested")))
    submitter.cancel("run-pre")
    assert [c.path.rsplit("/", 2)[-2] for c in fake_azure.requests("POST", "/cancel")] == [
        "run-pre-r1"
    ]


def test_a_run_preempted_again_fails_saying_preempted_in_status_and_callback(
    submitter, fake_azure, wire
):
    _submitted_then_failed(submitter, fake_azure, wire)
    _run_history(fake_azure, wire, child_error=PREEMPTED)
    _run_history(fake_azure, wire, "run-pre-r1", child_error=PREEMPTED)
    fake_azure.on("GET", r"/jobs/run-pre-r1\?", (200, wire.job("run-pre-r1", "Failed")))

    record = submitter.get("run-pre")

    assert record.status == "failed"
    assert record.error.startswith("preempted: train: UserError: AzureMLCompute job failed.")
    assert "Received pre-emption warning signal" in record.error
    assert record.error.endswith("(after 1 retry)")
    assert record.extra["preempted"] is True
    callback = run_summary(record, run_url="https://x/api/runs/run-pre")
    assert callback["status"] == "failed"
    assert callback["error"].startswith("preempted: ")
    assert len(fake_azure.requests("PUT", "/jobs/")) == 1  # no third attempt


def test_with_no_retries_allowed_a_preemption_fails_the_run_at_once(
    aml_env, monkeypatch, fake_azure, fake_credential, wire
):
    from pipeline.aml_submitter import AmlSubmitter

    monkeypatch.setenv("AML_PREEMPTION_RETRIES", "0")
    submitter = AmlSubmitter(
        Settings.from_env(), credential=fake_credential, transport=fake_azure, retry_total=0
    )
    fake_azure.on("GET", r"/jobs/run-pre\?", (200, wire.job("run-pre", "Failed")))
    _run_history(fake_azure, wire, child_error=PREEMPTED)

    record = submitter.get("run-pre")

    assert record.error.startswith("preempted: train: ")
    assert fake_azure.requests("PUT") == []


def test_another_failure_keeps_the_child_reason_and_is_not_retried(submitter, fake_azure, wire):
    fake_azure.on("GET", r"/jobs/run-pre\?", (200, wire.job("run-pre", "Failed")))
    _run_history(fake_azure, wire, child_error="train: no rows")

    record = submitter.get("run-pre")

    assert record.error == "train: UserError: train: no rows"
    assert record.extra["preempted"] is False
    assert fake_azure.requests("PUT") == []


def test_a_run_history_that_cannot_be_read_leaves_the_failure_as_it_was(
    submitter, fake_azure, wire
):
    fake_azure.on("GET", r"/jobs/run-pre\?", (200, wire.job("run-pre", "Failed")))

    record = submitter.get("run-pre")

    assert record.status == "failed"
    assert record.error == "the Azure ML job failed; see its logs in Azure ML studio"
    assert "preempted" not in record.extra
    assert fake_azure.requests("PUT") == []
