"""TriggerService: events in, exactly the runs that should exist out."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import pytest

from pipeline.request import TrainingRequest
from pipeline.submitter import SubmissionError
from triggers.events import BlobArrival, HttpSubmission, TimerTick
from triggers.service import Accepted, Deferred, DryRun, IdempotencyConflict, Skipped
from triggers.validation import RequestError


def http(body: dict | bytes, key: str | None = None) -> HttpSubmission:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HttpSubmission(body=raw, idempotency_key=key, content_type="application/json")


def blob_event(info) -> BlobArrival:
    return BlobArrival(container=info.container, name=info.name, etag=info.etag, size=info.size)


# --- HTTP ---------------------------------------------------------------------------------
def test_http_submission_makes_one_run_and_a_repeat_returns_it(service, fake_submitter):
    first = service.submit_http(http({"reason": "new data"}, key="k-1"))
    again = service.submit_http(http({"reason": "new data"}, key="k-1"))
    assert isinstance(first, Accepted) and first.created
    assert isinstance(again, Accepted) and not again.created
    assert again.run.run_id == first.run.run_id
    assert fake_submitter.submissions == [first.run.run_id]


def test_reusing_a_key_with_another_body_is_refused_naming_the_key(service):
    service.submit_http(http({"reason": "a"}, key="k-1"))
    with pytest.raises(IdempotencyConflict, match="'k-1'") as err:
        service.submit_http(http({"reason": "b"}, key="k-1"))
    assert err.value.status == 422


def test_without_a_key_the_same_body_the_same_day_is_one_run(service, fake_submitter, clock):
    first = service.submit_http(http({"reason": "x"}))
    spelled_out = service.submit_http(http({"reason": "x", "model_name": "porto-seguro-lgbm"}))
    assert spelled_out.run.run_id == first.run.run_id  # defaults count as the same request
    clock.advance(86_400)
    next_day = service.submit_http(http({"reason": "x"}))
    assert next_day.run.run_id != first.run.run_id
    assert len(fake_submitter.submissions) == 2


def test_dry_run_describes_and_records_nothing(service, fake_submitter):
    outcome = service.submit_http(http({"dry_run": True}, key="k"))
    assert isinstance(outcome, DryRun) and outcome.description["steps"][0]["name"] == "prep"
    assert fake_submitter.calls == 0
    assert service.ledger.get("http:k") is None


def test_every_invalid_field_is_named(service):
    body = {"params": {"learning_rate": 2, "num_leaves": "31"}, "deploy_target": "x", "oops": 1}
    with pytest.raises(RequestError) as err:
        service.submit_http(http(body))
    paths = {d["path"]: d for d in err.value.details}
    assert set(paths) == {"params.learning_rate", "params.num_leaves", "deploy_target", "oops"}
    assert paths["params.learning_rate"]["value"] == 2
    assert "less than or equal to 1" in paths["params.learning_rate"]["message"]
    assert "'none', 'local', 'aci' or 'aks'" in paths["deploy_target"]["message"]
    assert "accepted fields here: data, params" in paths["oops"]["message"]
    assert all("pydantic" not in d["message"] for d in err.value.details)


def test_malformed_json_gives_its_position(service):
    with pytest.raises(RequestError) as err:
        service.submit_http(http(b'{"reason": "x",\n "data": }'))
    assert err.value.status == 400
    assert "line 2 column 10" in err.value.message


def test_backend_refusal_is_recorded_and_a_retry_submits(service, fake_submitter):
    fake_submitter.fail_with = SubmissionError("unauthorized", "no access to workspace")
    with pytest.raises(SubmissionError):
        service.submit_http(http({}, key="k"))
    assert service.ledger.get("http:k").status == "failed"
    assert service.ledger.open_entries() == []  # final: nothing to retry on its own
    fake_submitter.fail_with = None
    retried = service.submit_http(http({}, key="k"))
    assert isinstance(retried, Accepted) and fake_submitter.submissions == [retried.run.run_id]
    [reopened] = service.ledger.open_entries()  # followed again by the monitor
    assert reopened.status == "submitted"


def test_private_callback_is_refused_in_azure(make_service, fake_submitter):
    service = make_service(WEBSITE_INSTANCE_ID="abc")
    from triggers.notify import CallbackNotifier

    service.notifier = CallbackNotifier(local=False, resolve=lambda host, port: ["10.0.0.7"])
    with pytest.raises(RequestError) as err:
        service.submit_http(http({"callback_url": "https://hooks.example.com/x"}))
    assert err.value.details[0]["path"] == "callback_url"
    assert "10.0.0.7" in err.value.message
    assert fake_submitter.calls == 0


# --- concurrency ----------------------------------------------------------------------------
def test_over_the_limit_queue_waits_then_starts_when_a_run_finishes(make_service, fake_submitter):
    service = make_service(MAX_CONCURRENT_RUNS="1", CONCURRENCY_POLICY="queue")
    first = service.submit_http(http({}, key="a"))
    second = service.submit_http(http({}, key="b"))
    assert second.run.status == "queued" and "queued until one finishes" in second.note
    assert fake_submitter.submissions == [first.run.run_id]
    assert service.dispatch_waiting() == []  # still full
    fake_submitter.finish(first.run.run_id)
    started = service.dispatch_waiting()
    assert [o.run.run_id for o in started] == [second.run.run_id]
    assert service.get_run(second.run.run_id).status == "queued"  # now from the backend


def test_over_the_limit_skip_makes_no_run_and_keeps_the_key_free(make_service, fake_submitter):
    service = make_service(MAX_CONCURRENT_RUNS="1", CONCURRENCY_POLICY="skip")
    first = service.submit_http(http({}, key="a"))
    skipped = service.submit_http(http({}, key="b"))
    assert isinstance(skipped, Skipped) and "CONCURRENCY_POLICY=skip" in skipped.reason
    fake_submitter.finish(first.run.run_id)
    later = service.submit_http(http({}, key="b"))
    assert isinstance(later, Accepted) and later.created


def test_32_different_requests_at_once_respect_the_limit_of_one(make_service, fake_submitter):
    # The HTTP server runs each request on its own thread: the limit must hold
    # between them, and every request must be accepted (submitted or waiting).
    service = make_service(MAX_CONCURRENT_RUNS="1", CONCURRENCY_POLICY="queue")
    barrier = threading.Barrier(32)
    outcomes, errors = [], []

    def post(i: int) -> None:
        try:
            barrier.wait()
            outcomes.append(service.submit_http(http({"reason": f"r{i}"}, key=f"k{i}")))
        except Exception as exc:  # collected: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(fake_submitter.submissions) == 1
    assert sorted(o.run.status for o in outcomes) == ["queued"] * 32
    assert len({o.run.run_id for o in outcomes}) == 32
    # The one that runs finishes: exactly one waiting run takes its place.
    fake_submitter.finish(fake_submitter.submissions[0])
    assert len(service.dispatch_waiting()) == 1
    assert len(fake_submitter.submissions) == 2


def test_waiting_run_can_be_canceled_before_it_starts(make_service, fake_submitter):
    service = make_service(MAX_CONCURRENT_RUNS="1")
    service.submit_http(http({}, key="a"))
    waiting = service.submit_http(http({}, key="b"))
    assert service.cancel_run(waiting.run.run_id).status == "canceled"
    fake_submitter.finish(next(iter(fake_submitter.runs)))
    assert service.dispatch_waiting() == []


# --- crash safety -------------------------------------------------------------------------
class Crash(BaseException):
    """The process dies between the ledger claim and the submission."""


def test_crash_between_claim_and_submit_is_recovered_as_exactly_one_run(
    make_service, fake_submitter, new_submitter
):
    service = make_service()
    fake_submitter.fail_with = Crash()
    with pytest.raises(Crash):
        service.submit_http(http({}, key="k"))
    assert fake_submitter.submissions == []
    assert service.ledger.get("http:k").status == "claimed"

    # Restart: a new process, the same ledger.
    backend = new_submitter()
    restarted = make_service(submitter=backend)
    recovered = restarted.recover(grace_s=0)
    assert [o.run.run_id for o in recovered] == backend.submissions
    assert len(backend.submissions) == 1
    # The event redelivered after the restart finds the run; nothing new starts.
    again = restarted.submit_http(http({}, key="k"))
    assert not again.created and len(backend.submissions) == 1
    assert restarted.recover(grace_s=0) == []


def test_recovery_leaves_young_claims_to_their_owner(make_service, fake_submitter):
    service = make_service()
    fake_submitter.fail_with = Crash()
    with pytest.raises(Crash):
        service.submit_http(http({}, key="k"))
    fake_submitter.fail_with = None
    assert service.recover(grace_s=120) == []


# --- timer --------------------------------------------------------------------------------
def test_timer_tick_delivered_twice_is_one_run(service, fake_submitter):
    at = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
    tick = TimerTick(function_name="scheduled_retrain", scheduled_at=at)
    first = service.on_timer(tick)
    second = service.on_timer(TimerTick(function_name="scheduled_retrain", scheduled_at=at,
                                        past_due=True))  # fmt: skip
    assert first.created and not second.created
    assert first.run.trigger == "timer"
    assert len(fake_submitter.submissions) == 1


def test_timer_trains_on_the_configured_prefix(make_service, fake_submitter):
    service = make_service(TRAIN_DATA_PREFIX="daily/")
    at = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
    outcome = service.on_timer(TimerTick(function_name="t", scheduled_at=at, past_due=True))
    assert outcome.run.request["data"] == "daily/"
    assert "past due" in outcome.run.request["reason"]


# --- blobs --------------------------------------------------------------------------------
def test_drop_of_200_files_makes_one_run_after_the_quiet_window(
    service, put, fake_submitter, clock
):
    for i in range(200):
        outcome = service.on_blob(blob_event(put(f"drops/d1/part-{i:03}.csv")))
        assert isinstance(outcome, Deferred)
        clock.advance(0.1)
    assert service.sweep_drops() == []  # still inside the quiet window
    clock.advance(30)
    [fired] = service.sweep_drops()
    assert isinstance(fired, Accepted) and fired.run.request["data"] == "drops/d1/"
    assert "200 files" in fired.run.request["reason"]
    assert service.sweep_drops() == []
    assert len(fake_submitter.submissions) == 1


def test_marker_starts_the_drop_at_once(service, put, fake_submitter, clock):
    for i in range(3):
        service.on_blob(blob_event(put(f"drops/d2/part-{i}.csv")))
    fired = service.on_blob(blob_event(put("drops/d2/_SUCCESS", b"")))
    assert isinstance(fired, Accepted) and fired.created
    clock.advance(3600)
    assert service.sweep_drops() == []  # the drop closed with its run
    assert len(fake_submitter.submissions) == 1


def test_marker_after_the_window_fired_is_the_same_run(service, put, fake_submitter, clock):
    service.on_blob(blob_event(put("drops/d3/part-0.csv")))
    clock.advance(31)
    [first] = service.sweep_drops()
    late = service.on_blob(blob_event(put("drops/d3/_SUCCESS", b"")))
    assert late.run.run_id == first.run.run_id and not late.created


def test_new_data_in_a_fired_folder_is_a_new_run(service, put, fake_submitter, clock):
    service.on_blob(blob_event(put("drops/d4/part-0.csv")))
    clock.advance(31)
    service.sweep_drops()
    service.on_blob(blob_event(put("drops/d4/part-1.csv")))
    clock.advance(31)
    [second] = service.sweep_drops()
    assert second.created and len(fake_submitter.submissions) == 2


def test_same_blob_event_50_times_at_once_makes_exactly_one_run(
    service, put, fake_submitter, clock
):
    event = blob_event(put("drops/d5/part-0.csv"))
    barrier = threading.Barrier(50)
    errors = []

    def deliver():
        try:
            barrier.wait()
            service.on_blob(event)
        except Exception as exc:  # collected: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    clock.advance(31)
    fired = [o for o in service.sweep_drops() if isinstance(o, Accepted)]
    assert len(fired) == 1 and len(fake_submitter.submissions) == 1


def test_same_event_50_times_at_once_in_each_mode_makes_exactly_one_run(
    make_service, put, fake_submitter
):
    service = make_service(BLOB_BATCH_MODE="each")
    event = blob_event(put("drops/d6/part-0.csv"))
    barrier = threading.Barrier(50)
    outcomes = []

    def deliver():
        barrier.wait()
        outcomes.append(service.on_blob(event))

    threads = [threading.Thread(target=deliver) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 50
    assert sum(o.created for o in outcomes) == 1
    assert len({o.run.run_id for o in outcomes}) == 1
    assert len(fake_submitter.submissions) == 1


def test_marker_mode_waits_for_the_marker(make_service, put, fake_submitter, clock):
    service = make_service(BLOB_BATCH_MODE="marker")
    deferred = service.on_blob(blob_event(put("drops/d7/part-0.csv")))
    assert isinstance(deferred, Deferred) and "_SUCCESS" in deferred.reason
    clock.advance(10_000)
    assert service.sweep_drops() == []
    assert service.on_blob(blob_event(put("drops/d7/_SUCCESS", b""))).created


def test_ignored_blobs_and_other_containers_are_skipped(service, put):
    assert isinstance(service.on_blob(blob_event(put("drops/x/readme.txt"))), Skipped)
    other = BlobArrival(container="elsewhere", name="a.csv", etag="e", size=3)
    skipped = service.on_blob(other)
    assert isinstance(skipped, Skipped) and "INCOMING_CONTAINER" in skipped.reason


def test_marker_without_data_makes_no_run(service, put, fake_submitter):
    outcome = service.on_blob(blob_event(put("drops/empty/_SUCCESS", b"")))
    assert isinstance(outcome, Skipped) and "no data files" in outcome.reason
    assert fake_submitter.calls == 0


def test_cli_and_http_share_the_ledger(service, fake_submitter):
    request = TrainingRequest(reason="manual")
    first = service.submit_request(request, trigger="cli", idempotency_key="cli:k")
    again = service.submit_request(request, trigger="cli", idempotency_key="cli:k")
    assert first.created and not again.created
    assert [r.run_id for r in service.list_runs()] == [first.run.run_id]
