"""A run whose retrain policy can skip starts as a drift probe (prep + check_drift);
on `retrain` the training job follows under the same run id, on `skip` nothing more
starts (pipeline/drift_probe.py)."""

from __future__ import annotations

import pytest

from pipeline.aml_job_graph import PROBE, TRAINING, WHOLE, plan_nodes
from pipeline.drift_probe import TAG_DECISION, TAG_REASON, drift_decision
from pipeline.request import TrainingRequest

PUBLISHED = [
    "prep", "check_drift", "train", "train_1", "train_2", "train_3", "score_champion",
    "select_best", "evaluate", "register", "deploy", "smoke_test",
]  # fmt: skip
AFTER_PROBE = ["train", "score_champion", "select_best", "evaluate", "register"]
PREPARED = "azureml://datastores/workspaceblobstore/paths/aml-trigger/run-dp/prepared/"
ON_DRIFT = TrainingRequest(retrain={"retrain_policy": "on_drift"})


class Jobs:
    """The workspace's jobs: a PUT stores the job (refused as the service refuses a
    job with an unbound input), a GET returns it or 404; `finish` sets a job's state."""

    def __init__(self, fake_azure, wire) -> None:
        self.stored: dict[str, dict] = {}
        self.wire = wire
        fake_azure.on("PUT", r"/jobs/[^/?]+\?", self.put)
        fake_azure.on("GET", r"/jobs/[^/?]+\?", self.get)
        # The listing filters on properties server side; every stored job has ours.
        fake_azure.on("GET", r"/jobs\?", lambda _: (200, {"value": list(self.stored.values())}))

    def put(self, sent):
        status, body = self.wire.echo_job()(sent)
        if status < 300:
            if body["name"] in self.stored:  # as the service: a second PUT changes nothing
                return self.wire.error(400, "UserError", "A job with this name already exists.")
            self.stored[body["name"]] = body
        return (status, body)

    def get(self, sent):
        name = sent.path.rsplit("/", 1)[-1]
        if name not in self.stored:
            return self.wire.error(404, "UserError", f"job {name} not found")
        return (200, self.stored[name])

    def finish(self, name: str, status: str) -> None:
        self.stored[name]["properties"]["status"] = status


def _decided(wire, decision: str | None, reason: str = "") -> list[dict]:
    tags = {TAG_DECISION: decision, TAG_REASON: reason} if decision else {}
    return [
        wire.child_run("prep", "Completed", "2026-11-22T08:01:00Z", "2026-11-22T08:03:00Z"),
        wire.child_run("check_drift", "Completed", "2026-11-22T08:03:10Z",
                       "2026-11-22T08:03:40Z", tags=tags),
    ]  # fmt: skip


@pytest.fixture
def jobs(fake_azure, wire):
    return Jobs(fake_azure, wire)


def _probe(submitter, fake_azure, jobs, request=ON_DRIFT):
    record = submitter.submit(request, run_id="run-dp", trigger="http", idempotency_key="k-dp")
    (put,) = fake_azure.requests("PUT", "/jobs/")
    return record, put.json()["properties"]


def test_a_drift_policy_request_starts_a_probe_of_two_nodes(submitter, fake_azure, jobs, wire):
    record, body = _probe(submitter, fake_azure, jobs)

    assert record.run_id == "run-dp" and record.status == "queued"
    assert list(body["jobs"]) == ["prep", "check_drift"]
    # prep writes where the training job will read it, named by the probe.
    assert body["jobs"]["prep"]["outputs"]["prepared"]["uri"] == PREPARED
    assert body["properties"]["aml_trigger.drift_probe"] == "true"
    assert body["properties"]["aml_trigger.pipeline_component"].endswith(
        "/components/aml_trigger_training/versions/3"
    )
    assert body["inputs"]["retrain_policy"]["value"] == "on_drift"


def test_an_always_request_is_one_job_with_no_probe(submitter, fake_azure, jobs):
    submitter.submit(TrainingRequest(), run_id="run-al", trigger="http")
    (put,) = fake_azure.requests("PUT", "/jobs/")
    body = put.json()["properties"]
    assert "check_drift" in body["jobs"] and "train" in body["jobs"]
    assert "aml_trigger.drift_probe" not in body["properties"]


def test_a_skip_completes_the_run_with_the_reason_and_starts_nothing(
    submitter, fake_azure, jobs, wire
):
    _probe(submitter, fake_azure, jobs)
    jobs.finish("run-dp", "Completed")
    reason = "no drift (max PSI 0.03 < 0.20)"
    wire.run_history(fake_azure, {"run-dp": _decided(wire, "skip", reason)})

    record = submitter.get("run-dp")

    assert record.status == "completed"
    assert record.extra["drift"] == {"decision": "skip", "reason": reason}
    assert [s.name for s in record.steps] == ["prep", "check_drift"]
    assert len(fake_azure.requests("PUT", "/jobs/")) == 1  # no training job
    assert fake_azure.requests("GET", "/jobs/run-dp-retrain") == []
    # check_drift's decision and the steps come from one read of the probe's children.
    assert len(fake_azure.requests("GET", "/runs/run-dp/children")) == 1


def test_a_retrain_submits_the_training_nodes_once_under_the_same_run_id(
    submitter, fake_azure, jobs, wire
):
    _, probe = _probe(submitter, fake_azure, jobs)
    jobs.finish("run-dp", "Completed")
    reason = "drift (max PSI 0.41 on ps_car_13 >= 0.20)"
    wire.run_history(fake_azure, {"run-dp": _decided(wire, "retrain", reason)})

    record = submitter.get("run-dp")

    first, second = fake_azure.requests("PUT", "/jobs/")
    assert second.path.endswith("/jobs/run-dp-retrain")
    body = second.json()["properties"]
    assert list(body["jobs"]) == AFTER_PROBE  # 5: no prep, no second drift check
    assert wire.unbound_node_inputs(body) == []
    assert body["inputs"]["prepared"]["uri"] == PREPARED
    assert body["jobs"]["train"]["inputs"]["prepared"]["value"] == "${{parent.inputs.prepared}}"
    assert "drift" not in body["jobs"]["train"]["inputs"]
    assert "drift" not in body["jobs"]["score_champion"]["inputs"]
    assert body["inputs"]["retrain_policy"]["value"] == "always"
    assert body["inputs"]["learning_rate"] == probe["inputs"]["learning_rate"]
    assert body["settings"] == probe["settings"]
    assert body["properties"]["aml_trigger.training_of"] == "run-dp"
    assert body["properties"]["aml_trigger.comparison_group"] == "run-dp"
    assert "aml_trigger.drift_probe" not in body["properties"]
    assert record.run_id == "run-dp" and record.status == "queued"
    assert record.extra["job_name"] == "run-dp-retrain"
    assert record.extra["drift"] == {"decision": "retrain", "reason": reason}
    assert [s.name for s in record.steps] == ["prep", "check_drift"]  # training not started

    # Read again (the run-ended event of the training job, then the safety net): the
    # training job is followed, never submitted twice.
    jobs.finish("run-dp-retrain", "Running")
    assert submitter.get("run-dp").status == "running"
    assert submitter.get("run-dp").status == "running"
    assert len(fake_azure.requests("PUT", "/jobs/")) == 2
    assert first.path.endswith("/jobs/run-dp")


def test_two_reads_at_once_submit_the_training_job_once(submitter, fake_azure, jobs, wire):
    _probe(submitter, fake_azure, jobs)
    jobs.finish("run-dp", "Completed")
    wire.run_history(fake_azure, {"run-dp": _decided(wire, "retrain", "no champion yet")})
    submitter.get("run-dp", with_steps=False)
    # A second reader that looked before the first one's PUT landed: its GET said 404,
    # its PUT is refused as "already exists", and it reads the job the first submitted.
    not_yet = wire.error(404, "UserError", "job run-dp-retrain not found")
    fake_azure.on("GET", r"/jobs/run-dp-retrain\?", not_yet, jobs.get)

    record = submitter.get("run-dp", with_steps=False)

    puts = [p.path.rsplit("/", 1)[-1] for p in fake_azure.requests("PUT", "/jobs/")]
    assert puts == ["run-dp", "run-dp-retrain", "run-dp-retrain"]  # the third refused
    assert list(jobs.stored) == ["run-dp", "run-dp-retrain"]
    assert record.status == "queued" and record.extra["job_name"] == "run-dp-retrain"


def test_the_run_lists_the_steps_of_both_jobs_in_order(submitter, fake_azure, jobs, wire):
    _probe(submitter, fake_azure, jobs)
    jobs.finish("run-dp", "Completed")
    trained = [
        wire.child_run(n, "Completed", f"2026-11-22T08:1{i}:00Z", f"2026-11-22T08:1{i}:30Z")
        for i, n in enumerate(AFTER_PROBE)
    ]
    probe = _decided(wire, "retrain", "no champion yet")
    wire.run_history(fake_azure, {"run-dp": probe, "run-dp-retrain": trained})
    submitter.get("run-dp")
    jobs.finish("run-dp-retrain", "Completed")

    record = submitter.get("run-dp")

    assert record.status == "completed"
    assert [s.name for s in record.steps] == ["prep", "check_drift", *AFTER_PROBE]
    assert record.steps[0].duration_s == 120.0 and record.steps[-1].duration_s == 30.0
    (listed,) = submitter.list_runs()
    assert listed.run_id == "run-dp" and listed.status == "completed"
    assert [s.name for s in listed.steps] == [s.name for s in record.steps]


def test_cancel_during_training_cancels_the_training_job(submitter, fake_azure, jobs, wire):
    _probe(submitter, fake_azure, jobs)
    jobs.finish("run-dp", "Completed")
    wire.run_history(fake_azure, {"run-dp": _decided(wire, "retrain", "no champion yet")})
    submitter.get("run-dp")
    jobs.finish("run-dp-retrain", "Running")
    fake_azure.on("POST", r"/jobs/run-dp-retrain/cancel", (202, None))

    submitter.cancel("run-dp")

    cancels = fake_azure.requests("POST", "/cancel")
    assert [c.path.rsplit("/", 2)[-2] for c in cancels] == ["run-dp-retrain"]


def test_cancel_during_the_probe_cancels_the_probe(submitter, fake_azure, jobs, wire):
    _probe(submitter, fake_azure, jobs)
    jobs.finish("run-dp", "Running")
    wire.run_history(fake_azure, {"run-dp": _decided(wire, None)[:1]})
    fake_azure.on("POST", r"/jobs/run-dp/cancel", (202, None))

    submitter.cancel("run-dp")

    assert [c.path.rsplit("/", 2)[-2] for c in fake_azure.requests("POST", "/cancel")] == ["run-dp"]
    assert len(fake_azure.requests("PUT", "/jobs/")) == 1


def test_a_probe_without_a_recorded_decision_fails_saying_why(submitter, fake_azure, jobs, wire):
    _probe(submitter, fake_azure, jobs)
    jobs.finish("run-dp", "Completed")
    wire.run_history(fake_azure, {"run-dp": _decided(wire, None)})

    record = submitter.get("run-dp")

    assert record.status == "failed"
    assert "recorded no aml_trigger.drift_decision tag" in record.error
    assert "aml-trigger publish" in record.error
    assert len(fake_azure.requests("PUT", "/jobs/")) == 1


def test_an_unreadable_decision_leaves_the_run_running_until_read(submitter, fake_azure, jobs):
    _probe(submitter, fake_azure, jobs)
    jobs.finish("run-dp", "Completed")  # no run history routed: the read fails

    record = submitter.get("run-dp", with_steps=False)

    assert record.status == "running" and record.finished_at is None
    assert "reading check_drift's decision" in record.extra["drift_probe_error"]
    assert len(fake_azure.requests("PUT", "/jobs/")) == 1


def test_a_failed_probe_is_the_run_failing(submitter, fake_azure, jobs):
    _probe(submitter, fake_azure, jobs)
    jobs.finish("run-dp", "Failed")

    record = submitter.get("run-dp", with_steps=False)

    assert record.status == "failed"
    assert len(fake_azure.requests("PUT", "/jobs/")) == 1


def test_describe_names_the_probe_nodes_and_those_after_a_retrain(submitter):
    described = submitter.describe(ON_DRIFT, run_id="run-dp", trigger="cli")
    assert described["nodes"] == ["prep", "check_drift"]
    assert described["nodes_after_retrain_decision"] == AFTER_PROBE


@pytest.mark.parametrize(
    ("phase", "count", "target", "expected"),
    [
        (PROBE, 4, "aci", ["prep", "check_drift"]),
        (TRAINING, 1, "none", AFTER_PROBE),
        (TRAINING, 2, "aci", ["train", "train_1", *AFTER_PROBE[1:], "deploy", "smoke_test"]),
        (WHOLE, 1, "none", ["prep", "check_drift", *AFTER_PROBE]),
    ],
)
def test_plan_nodes_per_phase(phase, count, target, expected):
    keep, _ = plan_nodes(PUBLISHED, candidate_count=count, deploy_target=target, phase=phase)
    assert keep == expected


def test_the_decision_is_read_from_check_drifts_tags():
    class Run:
        def __init__(self, name, tags):
            self.display_name, self.tags = name, tags

    assert drift_decision([Run("prep", {}), Run("check_drift", {TAG_DECISION: "skip",
                                                                TAG_REASON: "r"})]) == {
        "decision": "skip", "reason": "r"}  # fmt: skip
    assert drift_decision([Run("check_drift", {TAG_DECISION: "maybe"})]) is None
    assert drift_decision([Run("prep", {TAG_DECISION: "skip"})]) is None


def test_a_fan_out_probes_and_trains_per_compute(submitter, fake_azure, jobs, wire):
    request = TrainingRequest(compute=["cpu-a", "cpu-b"], retrain={"retrain_policy": "on_drift"})
    submitter.submit(request, run_id="run-dp", trigger="http")
    for member in ("run-dp-cpu-a", "run-dp-cpu-b"):
        jobs.finish(member, "Completed")
    decided = _decided(wire, "retrain", "no champion yet")
    wire.run_history(fake_azure, {"run-dp-cpu-a": decided, "run-dp-cpu-b": decided})

    first = submitter.get("run-dp", with_steps=False)
    again = submitter.get("run-dp", with_steps=False)  # the training jobs are listed now

    puts = [p.path.rsplit("/", 1)[-1] for p in fake_azure.requests("PUT", "/jobs/")]
    assert puts == ["run-dp-cpu-a", "run-dp-cpu-b", "run-dp-cpu-a-retrain", "run-dp-cpu-b-retrain"]
    for record in (first, again):
        assert [j["job_name"] for j in record.extra["jobs"]] == [
            "run-dp-cpu-a-retrain",
            "run-dp-cpu-b-retrain",
        ]


def test_run_ended_events_start_the_training_then_settle_the_run(submitter, fake_azure, jobs, wire):
    from triggers import decode
    from triggers.monitor import RunMonitor
    from triggers.runtime import build_service

    service = build_service(submitter.settings, submitter=submitter)
    run_id = service.submit_request(ON_DRIFT, trigger="http", idempotency_key="http:ev").run.run_id
    monitor = RunMonitor(service)

    def job_ended(job: str) -> str:
        """The run a RunStatusChanged event of `job` names, decoded as run_event does."""
        jobs.finish(job, "Completed")
        data = {"runId": job, "runStatus": "Completed", "experimentName": "aml-trigger",
                "runProperties": jobs.stored[job]["properties"]["properties"]}  # fmt: skip
        return decode.run_ended(decode.RUN_STATUS_CHANGED, data).run_id

    wire.run_history(fake_azure, {run_id: _decided(wire, "retrain", "no champion yet")})
    assert monitor.run_ended(job_ended(run_id)).finished == []  # the training job started
    assert list(jobs.stored) == [run_id, f"{run_id}-retrain"]

    report = monitor.run_ended(job_ended(f"{run_id}-retrain"))  # its event names the run

    assert report.finished == [run_id]
    assert service.ledger.by_run_id(run_id).run_status == "completed"
    assert len(fake_azure.requests("PUT", "/jobs/")) == 2
