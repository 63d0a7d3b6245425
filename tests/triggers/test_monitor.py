"""The run monitor: follows runs, retries what the backend could not take, starts
queued runs when a slot frees."""

from __future__ import annotations

import pytest

from pipeline.request import TrainingRequest
from pipeline.submitter import SubmissionError
from triggers.monitor import RunMonitor


def submit(service, key: str):
    return service.submit_request(TrainingRequest(), trigger="http", idempotency_key=key)


def test_backend_unavailable_then_back_is_submitted_by_the_monitor(service, fake_submitter):
    fake_submitter.fail_with = SubmissionError("unavailable", "Azure ML is down", retryable=True)
    with pytest.raises(SubmissionError):
        submit(service, "http:a")
    assert RunMonitor(service).tick().resubmitted == []  # still down: logged, kept
    fake_submitter.fail_with = None
    report = RunMonitor(service).tick()
    assert report.resubmitted == fake_submitter.submissions and len(report.resubmitted) == 1
    assert service.ledger.get("http:a").status == "submitted"


def test_queued_run_starts_when_the_running_one_ends(make_service, fake_submitter):
    service = make_service(MAX_CONCURRENT_RUNS="1")
    first = submit(service, "http:a")
    second = submit(service, "http:b")
    monitor = RunMonitor(service)
    assert monitor.tick().started == []
    fake_submitter.finish(first.run.run_id)
    report = monitor.tick()
    assert report.finished == [first.run.run_id]
    assert report.started == [second.run.run_id]
    fake_submitter.finish(second.run.run_id, status="failed")
    assert monitor.tick().finished == [second.run.run_id]
    assert service.ledger.open_entries() == []  # nothing left to follow


def test_run_ended_event_starts_the_next_queued_run_without_a_tick(make_service, fake_submitter):
    service = make_service(MAX_CONCURRENT_RUNS="1")
    first = submit(service, "http:a")
    second = submit(service, "http:b")
    monitor = RunMonitor(service)
    assert monitor.run_ended(first.run.run_id).started == []  # still running: nothing frees
    fake_submitter.finish(first.run.run_id)
    report = monitor.run_ended(first.run.run_id)
    assert report.finished == [first.run.run_id]
    assert report.started == [second.run.run_id]
    again = monitor.run_ended(first.run.run_id)  # a redelivered event changes nothing
    assert again.finished == [] and again.started == []


def test_the_end_of_a_run_that_is_not_ours_costs_no_dispatch(make_service, fake_submitter):
    service = make_service(MAX_CONCURRENT_RUNS="1")
    first = submit(service, "http:a")
    submit(service, "http:b")  # waits for the first
    fake_submitter.finish(first.run.run_id)
    # A step job of the pipeline ends: not a run of the ledger, so nothing is freed.
    assert RunMonitor(service).run_ended("run-step-job-7").started == []
    assert RunMonitor(service).run_ended(first.run.run_id).started != []


def test_an_end_that_arrives_before_the_submission_is_recorded_is_delivered_again(service):
    from triggers.monitor import RunNotRecordedYet

    # The run exists in the backend, but the process submitting it has not yet
    # written `submitted` in the ledger: settling now would lose the only event.
    service.ledger.claim("http:fast", run_id="run-fast-end", trigger="http", request={},
                         fingerprint="f")  # fmt: skip
    with pytest.raises(RunNotRecordedYet, match="run-fast-end"):
        RunMonitor(service).run_ended("run-fast-end")
