"""The queue under MAX_CONCURRENT_RUNS: first in, first out; each start follows the
end of a run; a run canceled while queued is a run that ended (listed, timed,
called back); times are set once, in one format."""

from __future__ import annotations

import json
import re
import time

import pytest
import requests

from pipeline.run_events import publish_run_ended
from triggers.events import HttpSubmission
from triggers.monitor import RunMonitor

KEY = "queue-test-key"
RFC3339_UTC_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def callbacks(callback_server):
    return callback_server()


@pytest.fixture
def queue_of_one(make_service):
    return make_service(MAX_CONCURRENT_RUNS="1", CONCURRENCY_POLICY="queue")


@pytest.fixture
def host(start_host, queue_of_one):
    return start_host(queue_of_one, key=KEY)


def api(host, method: str, path: str, body: dict | None = None, key: str | None = None):
    headers = {"x-functions-key": KEY}
    if key:
        headers["Idempotency-Key"] = key
    response = requests.request(
        method, f"{host.url}/api/{path}", json=body, headers=headers, timeout=10
    )
    assert response.status_code < 300, response.text
    return response.json()


def end_run(home, fake_submitter, run_id: str) -> None:
    """The backend ends `run_id` and says so as the local worker does; returns once
    the local host has delivered the event (its file is gone)."""
    started = list(fake_submitter.submissions)
    fake_submitter.finish(run_id)
    assert fake_submitter.submissions == started  # nothing starts before the event
    event = publish_run_ended(home, fake_submitter.get(run_id), experiment="aml-trigger")
    deadline = time.monotonic() + 60  # a bound on waiting, not a timing assertion
    while event.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not event.exists(), "the local host did not deliver the run-ended event"


def test_limit_one_four_posts_cancel_the_third_fifo_and_the_canceled_one_ended(
    host, home, queue_of_one, fake_submitter, callbacks
):
    runs = [
        api(
            host, "POST", "runs", {"reason": f"run {n}", "callback_url": callbacks.url}, key=f"q{n}"
        )  # fmt: skip
        for n in (1, 2, 3, 4)
    ]
    ids = [r["run_id"] for r in runs]
    assert fake_submitter.submissions == ids[:1]  # one slot: the others wait
    assert [r["extra"].get("ledger_status") for r in runs[1:]] == ["waiting"] * 3

    canceled = api(host, "POST", f"runs/{ids[2]}/cancel")
    assert canceled["status"] == "canceled" and RFC3339_UTC_MS.match(canceled["finished_at"])
    # Its end was an event: the originator was told before the cancel answered.
    assert [(b["run_id"], b["status"]) for b in callbacks.bodies] == [(ids[2], "canceled")]
    assert callbacks.bodies[0]["finished_at"] == canceled["finished_at"]
    listed = {r["run_id"]: r for r in api(host, "GET", "runs")["runs"]}
    assert listed[ids[2]]["status"] == "canceled"
    assert listed[ids[2]]["finished_at"] == canceled["finished_at"]
    assert listed[ids[2]]["created_at"] == runs[2]["created_at"]

    # Each start is caused by the end before it: the backend ends the run, the end
    # reaches the host as the run-ended event (the file the local worker writes),
    # and the host's Event Grid runner hands it to `run_ended`, which starts the next.
    end_run(home, fake_submitter, ids[0])
    assert fake_submitter.submissions == ids[:2]
    end_run(home, fake_submitter, ids[1])
    assert fake_submitter.submissions == [ids[0], ids[1], ids[3]]  # FIFO, the canceled skipped

    # A queued run keeps the created_at it was given when it was accepted.
    started = api(host, "GET", f"runs/{ids[1]}")
    assert started["created_at"] == runs[1]["created_at"]
    for run in api(host, "GET", "runs")["runs"]:
        assert RFC3339_UTC_MS.match(run["created_at"]), run
    assert RunMonitor(queue_of_one).run_ended(ids[2]).finished == []  # not reported twice
    assert [b["run_id"] for b in callbacks.bodies].count(ids[2]) == 1


def post(service, key: str):
    body = json.dumps({"reason": key}).encode()
    return service.submit_http(
        HttpSubmission(body=body, idempotency_key=key, content_type="application/json")
    )


def test_a_post_while_a_slot_is_free_does_not_overtake_older_queued_runs(
    queue_of_one, fake_submitter
):
    first, second = post(queue_of_one, "a"), post(queue_of_one, "b")
    fake_submitter.finish(first.run.run_id)  # ended; its event not delivered yet
    third = post(queue_of_one, "c")
    # The slot went to the run that waited, and the newcomer queued behind it.
    assert fake_submitter.submissions == [first.run.run_id, second.run.run_id]
    assert third.run.extra["ledger_status"] == "waiting"
    fake_submitter.finish(second.run.run_id)
    assert RunMonitor(queue_of_one).run_ended(second.run.run_id).started == [third.run.run_id]


def test_canceling_a_started_run_goes_to_the_backend(queue_of_one, fake_submitter):
    running = post(queue_of_one, "a")
    assert queue_of_one.cancel_run(running.run.run_id).status == "canceled"
    assert fake_submitter.runs[running.run.run_id].status == "canceled"
    queued_next = post(queue_of_one, "b")  # the canceled run's slot is free
    assert fake_submitter.submissions == [running.run.run_id, queued_next.run.run_id]


def test_a_claim_left_by_a_crash_is_recovered_under_the_limit(queue_of_one, fake_submitter):
    running = post(queue_of_one, "a")
    # What a process that died between the ledger claim and the admission leaves.
    orphan, _ = queue_of_one.ledger.claim(
        "http:x", run_id="run-orphan-x", trigger="http", request={"reason": "x"},
        fingerprint="f",
    )  # fmt: skip
    queue_of_one.recover(grace_s=0)
    assert fake_submitter.submissions == [running.run.run_id]  # the slot is taken: it waits
    assert queue_of_one.ledger.get("http:x").status == "waiting"
    fake_submitter.finish(running.run.run_id)
    assert RunMonitor(queue_of_one).run_ended(running.run.run_id).started == ["run-orphan-x"]


def test_a_run_the_backend_refused_stays_listed_as_failed_and_frees_its_slot(
    queue_of_one, fake_submitter
):
    from pipeline.submitter import SubmissionError

    fake_submitter.fail_with = SubmissionError("invalid", "the workspace said no")
    with pytest.raises(SubmissionError):
        post(queue_of_one, "a")
    fake_submitter.fail_with = None
    listed = {r.idempotency_key: r for r in queue_of_one.list_runs()}
    assert listed["http:a"].status == "failed"
    assert RFC3339_UTC_MS.match(listed["http:a"].finished_at)
    started = post(queue_of_one, "b")  # the refused run holds no slot
    assert fake_submitter.submissions == [started.run.run_id]
