"""An idle app costs nothing: drops close by their delayed message, runs end by their
event, and the 5-minute safety net does both when an event is lost."""

from __future__ import annotations

import json

import pytest

import function_app
from pipeline.request import TrainingRequest
from pipeline.run_events import events_dir, publish_run_ended
from pipeline.settings import Settings
from triggers import decode, entry
from triggers.decode import UndecodableEvent
from triggers.events import RunEnded
from triggers.host.event_grid import EventGridRunner
from triggers.host.functions import index_app
from triggers.host.local_host import app_settings
from triggers.host.queues import FolderSource, QueueRunner
from triggers.queues import DROP_QUEUE, FolderQueue
from triggers.service import Accepted


def _index(home):
    settings = Settings.from_env({"AML_TRIGGER_HOME": str(home)})
    return index_app(function_app.app, app_settings(settings, {}))


@pytest.fixture
def queue_runner(home, drop_queue):
    """function_app's queue functions on the folder queue, as the local host runs them."""
    return QueueRunner(_index(home).queues, lambda function: FolderSource(drop_queue))


@pytest.fixture
def event_runner(home):
    return EventGridRunner(_index(home).event_grid, events_dir(home))


def _land(name: str, landed) -> None:
    entry.blob(landed(name))  # what function_app's incoming_blob does


# --- quiet windows ------------------------------------------------------------------------
def test_a_drop_quiet_window_is_closed_by_its_delayed_message(
    installed, landed, clock, drop_queue, queue_runner, fake_submitter
):
    for i in range(3):
        _land(f"drops/q/part-{i}.csv", landed)
        clock.advance(5)
    assert len(drop_queue.texts()) == 1  # one message per drop, not one per blob
    assert queue_runner.poll().delivered == []  # hidden for BLOB_QUIET_SECONDS

    clock.advance(20)  # 30 s after the first blob, 20 s after the last: wait again
    assert len(queue_runner.poll().delivered) == 1
    assert fake_submitter.submissions == []
    [again] = drop_queue.texts()
    assert decode.drop_window(again).folder == "drops/q/"

    clock.advance(10)  # 30 s after the last blob: the window closes
    assert len(queue_runner.poll().delivered) == 1
    assert len(fake_submitter.submissions) == 1
    assert fake_submitter.get(fake_submitter.submissions[0]).request["data"] == "drops/q/"
    assert drop_queue.texts() == []  # nothing left to wake anyone up
    assert installed.drops.open_drops() == []


def test_a_trickle_of_blobs_cannot_hold_a_drop_past_the_max_delay(
    make_service, landed, clock, drop_queue, queue_runner, fake_submitter
):
    from triggers import runtime

    runtime.install(make_service(BLOB_QUIET_SECONDS="30", BLOB_MAX_DELAY_SECONDS="60"))
    try:
        waited = 0
        while not fake_submitter.submissions:
            _land(f"drops/t/part-{waited}.csv", landed)
            clock.advance(10)
            waited += 10
            queue_runner.poll()
            assert waited <= 60
    finally:
        runtime.reset()
    record = fake_submitter.get(fake_submitter.submissions[0])
    assert "max delay" in record.request["reason"]


def test_a_failing_drop_message_is_retried_then_poisoned(home, clock, drop_queue):
    calls = []

    def failing(message):
        calls.append(message.dequeue_count)
        raise RuntimeError("storage down")

    from triggers.host.functions import QueueFunction

    function = QueueFunction("drop_window", DROP_QUEUE, "AzureWebJobsStorage", failing)
    runner = QueueRunner((function,), lambda f: FolderSource(drop_queue))
    drop_queue.send(decode.drop_window_message("incoming", "drops/p/"), delay_s=0)
    reports = [runner.poll() for _ in range(6)]
    assert calls == [1, 2, 3, 4, 5]
    assert len(reports[4].poisoned) == 1 and drop_queue.texts() == []
    poison = FolderQueue(home / "queues", f"{DROP_QUEUE}-poison", clock=clock)
    assert decode.drop_window(poison.texts()[0]).folder == "drops/p/"


class UnreachableQueue:
    name = DROP_QUEUE

    def send(self, text: str, *, delay_s: float) -> None:
        raise ConnectionError("queue endpoint unreachable")


def test_safety_net_starts_a_drop_whose_message_was_lost(
    make_service, landed, clock, fake_submitter, caplog
):
    from triggers import runtime

    runtime.install(make_service())
    runtime.service().drop_queue = UnreachableQueue()
    try:
        _land("drops/lost/part-0.csv", landed)  # the blob is still accepted
        assert "safety net" in caplog.text
        clock.advance(31)
        entry.safety_net()
    finally:
        runtime.reset()
    assert len(fake_submitter.submissions) == 1


def test_undecodable_drop_message_is_refused_naming_the_field():
    with pytest.raises(UndecodableEvent, match="'folder' must be a string"):
        decode.drop_window(b'{"container": "incoming"}')
    with pytest.raises(UndecodableEvent, match="not JSON"):
        decode.drop_window(b"drops/a/")


# --- run ends -----------------------------------------------------------------------------
def _submit_with_callback(service, url: str, key: str):
    request = TrainingRequest(callback_url=url)
    outcome = service.submit_request(request, trigger="http", idempotency_key=key)
    assert isinstance(outcome, Accepted)
    return outcome.run


def test_a_run_end_reaches_the_callback_through_the_event_without_a_timer(
    home, installed, fake_submitter, event_runner, callback_server
):
    hook = callback_server([200])
    run = _submit_with_callback(installed, hook.url, "http:ev-1")
    fake_submitter.finish(run.run_id, "completed")
    # What the local worker writes when the run ends (pipeline/worker.py).
    publish_run_ended(home, fake_submitter.get(run.run_id), experiment="aml-trigger")
    assert len(event_runner.deliver().delivered) == 1
    assert [b["run_id"] for b in hook.bodies] == [run.run_id]
    assert hook.bodies[0]["status"] == "completed"
    assert installed.ledger.open_entries() == []
    assert event_runner.deliver().delivered == []  # the event file is gone


def test_a_queued_run_starts_when_the_running_one_ends_by_event(
    make_service, fake_submitter, home, event_runner
):
    from triggers import runtime

    service = make_service(MAX_CONCURRENT_RUNS="1")
    runtime.install(service)
    try:
        first = service.submit_request(TrainingRequest(), trigger="http", idempotency_key="http:a")
        second = service.submit_request(TrainingRequest(), trigger="http", idempotency_key="http:b")
        assert fake_submitter.submissions == [first.run.run_id]
        fake_submitter.finish(first.run.run_id, "failed")
        publish_run_ended(home, fake_submitter.get(first.run.run_id), experiment="x")
        event_runner.deliver()
    finally:
        runtime.reset()
    assert fake_submitter.submissions == [first.run.run_id, second.run.run_id]


def test_safety_net_settles_a_run_whose_end_event_was_lost(
    installed, fake_submitter, callback_server
):
    hook = callback_server([200])
    run = _submit_with_callback(installed, hook.url, "http:lost-event")
    fake_submitter.finish(run.run_id, "completed")
    entry.safety_net()
    assert [b["run_id"] for b in hook.bodies] == [run.run_id]
    assert installed.ledger.open_entries() == []


def test_run_events_decode_as_azure_ml_sends_them():
    data = {"experimentName": "aml-trigger", "runId": "run-abc-cpu", "runStatus": "Failed",
            "runProperties": {"aml_trigger.comparison_group": "run-abc"}}  # fmt: skip
    changed = "Microsoft.MachineLearningServices.RunStatusChanged"
    assert decode.run_ended(changed, data) == RunEnded(
        run_id="run-abc", status="failed", experiment="aml-trigger"
    )
    assert decode.run_ended(changed, {**data, "runStatus": "Running"}) is None
    completed = "Microsoft.MachineLearningServices.RunCompleted"
    assert decode.run_ended(completed, {"runId": "run-x"}).run_id == "run-x"
    assert decode.run_ended("Microsoft.MachineLearningServices.ModelRegistered", {}) is None
    with pytest.raises(UndecodableEvent, match="data.runId"):
        decode.run_ended(completed, {"runId": ""})


def test_the_local_worker_event_has_the_azure_ml_shape(home, fake_submitter, service):
    outcome = service.submit_request(TrainingRequest(), trigger="http", idempotency_key="http:w")
    assert publish_run_ended(home, outcome.run, experiment="e") is None  # not ended: nothing
    fake_submitter.finish(outcome.run.run_id, "canceled")
    path = publish_run_ended(home, fake_submitter.get(outcome.run.run_id), experiment="e")
    [event] = json.loads(path.read_text())
    assert event["eventType"] == "Microsoft.MachineLearningServices.RunStatusChanged"
    assert event["subject"] == f"experiments/e/runs/{outcome.run.run_id}"
    ended = decode.run_ended(event["eventType"], event["data"])
    assert ended == RunEnded(run_id=outcome.run.run_id, status="canceled", experiment="e")


def test_a_failing_event_is_retried_then_dead_lettered(home):
    from triggers.host.functions import EventGridFunction

    def failing(event):
        raise RuntimeError("ledger down")

    runner = EventGridRunner((EventGridFunction("run_ended", failing),), events_dir(home),
                             max_attempts=3)  # fmt: skip
    events_dir(home).mkdir(parents=True)
    (events_dir(home) / "1-e.json").write_text(json.dumps([{"id": "e", "eventType": "x",
                                                            "data": {}}]))  # fmt: skip
    reports = [runner.deliver() for _ in range(3)]
    assert [len(r.failed) for r in reports] == [1, 1, 0]
    assert reports[2].dead_lettered == ["1-e.json"]
    assert (events_dir(home) / "dead-letter" / "1-e.json").exists()
