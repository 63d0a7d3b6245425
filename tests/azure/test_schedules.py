"""Schedules at the wire: create (cron and recurrence), disable, trigger, delete."""

from __future__ import annotations

import pytest

from pipeline.request import TrainingRequest
from pipeline.schedules import Cron, Recurrence, Schedules, check_cron


class ScheduleStore:
    def __init__(self) -> None:
        self.stored: dict[str, dict] = {}

    def put(self, sent):
        body = sent.json()
        body["properties"]["provisioningState"] = "Succeeded"
        body["properties"].setdefault("isEnabled", True)  # the service default
        name = sent.path.rsplit("/", 1)[-1]
        resource = {"id": sent.path, "name": name, **body}
        self.stored[name] = resource
        return (200, resource)

    def get(self, sent):
        name = sent.path.rsplit("/", 1)[-1]
        if name in self.stored:
            return (200, self.stored[name])
        return (404, {"error": {"code": "NotFound", "message": "no schedule"}})

    def list(self, sent):
        return (200, {"value": list(self.stored.values())})

    def delete(self, sent):
        # "A schedule must be disabled to be deleted" (Learn, "Schedule Azure Machine
        # Learning pipeline jobs"): the service refuses an enabled one.
        name = sent.path.rsplit("/", 1)[-1]
        if name not in self.stored:
            return (204, None)
        if self.stored[name]["properties"].get("isEnabled", True):
            message = f"Schedule {name} is enabled; a schedule must be disabled to be deleted"
            return (400, {"error": {"code": "UserError", "message": message}})
        del self.stored[name]
        return (200, None)


@pytest.fixture
def store(fake_azure):
    store = ScheduleStore()
    fake_azure.on("PUT", r"/schedules/[^/?]+\?", store.put)
    fake_azure.on("GET", r"/schedules/[^/?]+\?", store.get)
    fake_azure.on("GET", r"/schedules\?", store.list)
    fake_azure.on("DELETE", r"/schedules/[^/?]+\?", store.delete)
    return store


@pytest.fixture
def schedules(submitter, store):
    return Schedules(submitter)


def test_create_with_cron_puts_a_job_schedule_of_the_pipeline_job(schedules, fake_azure, wire):
    created = schedules.create(
        "nightly",
        TrainingRequest(data="daily/", params={"num_leaves": 40}),
        Cron("30 2 * * *", time_zone="W. Europe Standard Time"),
    )

    put = fake_azure.requests("PUT")[0]
    assert put.path == f"{wire.WS_PATH}/schedules/nightly"
    props = put.json()["properties"]
    assert props.get("isEnabled", True) is True  # the service default
    assert props["trigger"] == {
        "triggerType": "Cron",
        "expression": "30 2 * * *",
        "timeZone": "W. Europe Standard Time",
    } | {k: v for k, v in props["trigger"].items() if k in {"startTime", "endTime"}}
    action = props["action"]
    assert action["actionType"] == "CreateJob"
    job = action["jobDefinition"]
    assert job["jobType"] == "Pipeline"
    # Built like a trigger's run: the published step components, only the nodes used.
    assert job["properties"]["aml_trigger.pipeline_component"].endswith(
        "/components/aml_trigger_training/versions/3"
    )
    assert [n for n in job["jobs"] if n.startswith("train")] == ["train"]
    assert "deploy" not in job["jobs"]
    assert wire.unbound_node_inputs(job) == []
    assert job["inputs"]["num_leaves"] == {"jobInputType": "literal", "value": "40"}
    assert job["inputs"]["trigger"]["value"] == "schedule"
    assert job["inputs"]["training_data"]["uri"] == "azureml://datastores/incoming/paths/daily/"
    assert job["tags"]["aml_trigger.trigger"] == "schedule"
    assert created == {
        "name": "nightly",
        "enabled": True,
        "trigger": {
            "type": "cron",
            "expression": "30 2 * * *",
            "time_zone": "W. Europe Standard Time",
        },
        "provisioning_state": "Succeeded",
    }


def test_create_with_recurrence_sends_frequency_interval_and_time(schedules, fake_azure):
    schedules.create("weekly", TrainingRequest(), Recurrence("week", 1, hours=(3,), minutes=(15,)))
    trigger = fake_azure.requests("PUT")[0].json()["properties"]["trigger"]
    assert trigger["triggerType"] == "Recurrence"
    assert trigger["frequency"].lower() == "week"
    assert trigger["interval"] == 1
    assert trigger["schedule"]["hours"] == [3] and trigger["schedule"]["minutes"] == [15]


def test_disable_reads_the_schedule_and_puts_it_back_disabled(schedules, fake_azure):
    schedules.create("nightly", TrainingRequest(), Cron("0 2 * * *"))

    result = schedules.disable("nightly")

    methods = [(s.method, s.path.rsplit("/", 1)[-1]) for s in fake_azure.sent]
    assert methods[-2:] == [("GET", "nightly"), ("PUT", "nightly")]
    body = fake_azure.requests("PUT")[-1].json()["properties"]
    assert body["isEnabled"] is False
    assert body["trigger"]["expression"] == "0 2 * * *"
    assert result["enabled"] is False


def test_trigger_starts_one_job_now(schedules, fake_azure):
    fake_azure.on(
        "POST",
        r"/schedules/nightly/trigger\?",
        (200, {"submissionId": "sharp_job_42", "scheduleActionType": "CreateJob"}),
    )
    assert schedules.trigger("nightly") == "sharp_job_42"
    assert "scheduleTime" in fake_azure.requests("POST")[0].json()


def test_a_missing_schedule_is_named(schedules):
    from pipeline.submitter import SubmissionError

    with pytest.raises(SubmissionError) as caught:
        schedules.disable("nope")
    assert caught.value.code == "not_found"
    assert "schedule nope does not exist" in caught.value.message


def test_fan_out_cannot_be_scheduled(schedules, fake_azure):
    from pipeline.submitter import SubmissionError

    with pytest.raises(SubmissionError, match="one schedule per compute"):
        schedules.create("two", TrainingRequest(compute=["a1", "b1"]), Cron("0 2 * * *"))
    assert fake_azure.requests("PUT") == []


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 0 2 * * *", "drop the seconds field"),
        ("0 25 * * *", "hour 25 is outside 0-23"),
        ("0 2 * * ;", "day of week field ';' has invalid characters"),
        ("0 2 *", "expected 5 fields"),
    ],
)
def test_bad_cron_is_refused_naming_the_field(expression, message):
    with pytest.raises(ValueError, match=message):
        check_cron(expression)


def test_good_cron_passes():
    assert check_cron("*/15 2-4 1,15 * MON-FRI") == "*/15 2-4 1,15 * MON-FRI"


def test_the_service_refuses_to_delete_an_enabled_schedule(schedules, submitter, store):
    from azure.core.exceptions import HttpResponseError

    schedules.create("nightly", TrainingRequest(), Cron("0 2 * * *"))
    with pytest.raises(HttpResponseError, match="must be disabled to be deleted"):
        submitter.client().schedules.begin_delete("nightly").result()
    assert "nightly" in store.stored


def test_delete_disables_first_then_deletes(schedules, fake_azure, store):
    schedules.create("nightly", TrainingRequest(), Cron("0 2 * * *"))
    before = len(fake_azure.sent)

    schedules.delete("nightly")

    calls = [(s.method, s.path.rsplit("/", 1)[-1]) for s in fake_azure.sent[before:]]
    assert calls == [
        ("GET", "nightly"),  # is it enabled?
        ("GET", "nightly"),  # begin_disable reads it...
        ("PUT", "nightly"),  # ...and puts it back with isEnabled false
        ("DELETE", "nightly"),
    ]
    assert fake_azure.requests("PUT")[-1].json()["properties"]["isEnabled"] is False
    assert store.stored == {}


def test_delete_of_a_disabled_schedule_deletes_at_once(schedules, fake_azure, store):
    schedules.create("nightly", TrainingRequest(), Cron("0 2 * * *"))
    schedules.disable("nightly")
    before = len(fake_azure.sent)

    schedules.delete("nightly")

    assert [s.method for s in fake_azure.sent[before:]] == ["GET", "DELETE"]
    assert store.stored == {}


def test_schedules_follow_what_publish_registers_later(schedules, fake_azure, store, wire):
    schedules.create("nightly", TrainingRequest(params={"num_leaves": 40}), Cron("0 2 * * *"))
    schedules.create("weekly", TrainingRequest(), Cron("0 3 * * 1"))
    schedules.disable("weekly")
    store.stored["someone-elses"] = {
        **store.stored["weekly"], "name": "someone-elses", "properties": {
            **store.stored["weekly"]["properties"], "tags": {}}}  # fmt: skip
    puts_before = len(fake_azure.requests("PUT"))

    wire.route_published_pipeline(fake_azure, "4")  # what `publish` just registered

    updated = schedules.follow("aml_trigger_training:4")

    assert sorted(updated) == ["nightly", "weekly"]
    puts = fake_azure.requests("PUT")[puts_before:]
    assert sorted(p.path.rsplit("/", 1)[-1] for p in puts) == ["nightly", "weekly"]
    for put in puts:
        props = put.json()["properties"]
        job = props["action"]["jobDefinition"]
        assert job["properties"]["aml_trigger.pipeline_component"] == (
            wire.WS_PATH + "/components/aml_trigger_training/versions/4"
        )
        assert wire.unbound_node_inputs(job) == []
        assert job["inputs"]["code_version"]["value"] == "4"
        assert job["tags"]["aml_trigger.code_version"] == "4"
    nightly = store.stored["nightly"]["properties"]
    assert nightly["action"]["jobDefinition"]["inputs"]["num_leaves"]["value"] == "40"
    assert store.stored["weekly"]["properties"]["isEnabled"] is False  # stays disabled
    # Following again changes nothing.
    assert schedules.follow("aml_trigger_training:4") == []


def test_each_firing_of_a_schedule_is_its_own_run(submitter, fake_azure, wire):
    firings = [
        wire.job(
            name,
            status,
            tags={"aml_trigger.trigger": "schedule"},
            properties={"aml_trigger.run_id": "nightly", "aml_trigger.schedule": "nightly"},
        )
        for name, status in (("sharp_job_41", "Completed"), ("sharp_job_42", "Queued"))
    ]
    fake_azure.on("GET", r"/jobs\?", (200, {"value": firings}))
    wire.run_history(fake_azure, {"sharp_job_41": []})

    runs = submitter.list_runs(limit=10)

    assert sorted((r.run_id, r.trigger, r.status) for r in runs) == [
        ("sharp_job_41", "schedule", "completed"),
        ("sharp_job_42", "schedule", "queued"),
    ]


def test_a_schedule_cannot_deploy_locally(schedules, fake_azure):
    from pipeline.submitter import SubmissionError

    with pytest.raises(SubmissionError, match="deploy_target: `local`"):
        schedules.create("nightly", TrainingRequest(deploy_target="local"), Cron("0 2 * * *"))
    assert fake_azure.requests("PUT") == []
