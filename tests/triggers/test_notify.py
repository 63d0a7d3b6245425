"""Callbacks: safe URLs only, retried with backoff, sent once per run."""

from __future__ import annotations

import json

import pytest

from triggers.monitor import RunMonitor
from triggers.notify import CallbackNotifier, UnsafeCallback, check_callback_url
from triggers.service import Accepted
from triggers.validation import RequestError


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def notifier(sleeps):
    return CallbackNotifier(local=True, sleep=sleeps.append, base_delay_s=1.0, attempts=5)


def test_callback_is_retried_with_backoff_then_sent_once(
    make_service, fake_submitter, notifier, sleeps, callback_server
):
    service = make_service(notifier=notifier)
    hook = callback_server([503, 500, 200])
    outcome = service.submit_request(
        _request(f"{hook.url}?x=1"), trigger="http", idempotency_key="http:cb-1"
    )
    assert isinstance(outcome, Accepted)
    monitor = RunMonitor(service)
    assert monitor.tick().notified == []  # still queued: nothing to say yet
    fake_submitter.finish(
        outcome.run.run_id,
        metrics={"auc": 0.71},
        gate={"decision": "promote", "reasons": []},
        model_version="3",
        endpoint="http://127.0.0.1:5001/score",
    )
    report = monitor.tick()
    assert report.notified == [outcome.run.run_id]
    assert monitor.tick().notified == []  # recorded: never sent twice
    assert sleeps == [1.0, 2.0]  # exponential backoff between the three attempts
    assert len(hook.bodies) == 3
    summary = hook.bodies[-1]
    assert summary["status"] == "completed" and summary["metrics"] == {"auc": 0.71}
    assert summary["gate_decision"] == "promote" and summary["model_version"] == "3"
    assert summary["endpoint"] == "http://127.0.0.1:5001/score"
    assert summary["run_url"].endswith(f"/api/runs/{outcome.run.run_id}")
    entry = service.ledger.get("http:cb-1")
    assert entry.notification["state"] == "sent" and entry.notification["attempts"] == 3


def test_retries_are_bounded_and_the_failure_recorded(
    make_service, fake_submitter, notifier, sleeps, callback_server
):
    service = make_service(notifier=notifier)
    hook = callback_server([503] * 10)
    outcome = service.submit_request(_request(f"{hook.url}?x=1"), trigger="http",
                                     idempotency_key="http:cb-2")  # fmt: skip
    fake_submitter.finish(outcome.run.run_id, status="failed", error="prep: no rows")
    report = RunMonitor(service).tick()
    assert report.notify_failed == [outcome.run.run_id]
    assert len(hook.bodies) == 5 and sleeps == [1.0, 2.0, 4.0, 8.0]
    assert service.ledger.get("http:cb-2").notification["state"] == "failed"
    assert RunMonitor(service).tick().notify_failed == []


def test_a_client_error_is_not_retried(notifier, callback_server):
    delivery = notifier.send(callback_server([404]).url, {"run_id": "r"})
    assert not delivery.ok and delivery.attempts == 1 and delivery.status == 404


def test_unreachable_callback_is_retried_then_given_up(notifier, sleeps):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    delivery = notifier.send(f"http://127.0.0.1:{port}/hook", {"run_id": "r"})
    assert not delivery.ok and delivery.attempts == 5 and "Error" in delivery.error


# --- URL safety -------------------------------------------------------------------------------
def public(host, port):
    return ["20.50.2.1"]


@pytest.mark.parametrize(
    "address",
    ["10.1.2.3", "172.16.0.9", "192.168.1.1", "127.0.0.1", "169.254.169.254", "224.0.0.1",
     "0.0.0.0", "240.0.0.1", "::1", "fe80::1", "fd00::1", "::ffff:10.0.0.1", "100.64.0.1"],
)  # fmt: skip
def test_azure_mode_refuses_hosts_resolving_to_non_public_addresses(address):
    with pytest.raises(UnsafeCallback, match="non-public"):
        check_callback_url(
            "https://hooks.example.com/x", local=False, resolve=lambda h, p: [address]
        )


def test_azure_mode_accepts_public_https_and_refuses_http():
    assert check_callback_url("https://hooks.example.com/x", local=False, resolve=public) == [
        "20.50.2.1"
    ]
    with pytest.raises(UnsafeCallback, match="http is not accepted in Azure; use https"):
        check_callback_url("http://hooks.example.com/x", local=False, resolve=public)


def test_local_mode_allows_http_only_to_loopback():
    check_callback_url("http://127.0.0.1:9000/x", local=True)
    check_callback_url("http://localhost:9000/x", local=True)
    with pytest.raises(UnsafeCallback, match="loopback"):
        check_callback_url("http://example.com/x", local=True)


def test_dns_rebinding_between_submission_and_delivery_is_refused(
    make_service, fake_submitter, sleeps
):
    answers = {"addr": "20.50.2.1"}
    notifier = CallbackNotifier(
        local=False, resolve=lambda h, p: [answers["addr"]], sleep=sleeps.append
    )
    service = make_service(notifier=notifier)
    outcome = service.submit_request(
        _request("https://hooks.example.com/x"), trigger="http", idempotency_key="http:rb"
    )
    answers["addr"] = "169.254.169.254"  # the name now points at the metadata service
    fake_submitter.finish(outcome.run.run_id)
    report = RunMonitor(service).tick()
    assert report.notify_failed == [outcome.run.run_id]
    assert "169.254.169.254" in service.ledger.get("http:rb").notification["error"]


def test_private_callback_is_rejected_at_submission_over_http(make_service):
    notifier = CallbackNotifier(local=False, resolve=lambda h, p: ["192.168.0.10"])
    service = make_service(notifier=notifier)
    from triggers.events import HttpSubmission

    body = json.dumps({"callback_url": "https://internal.example.com/hook"}).encode()
    with pytest.raises(RequestError) as err:
        service.submit_http(HttpSubmission(body=body, idempotency_key="k"))
    assert err.value.status == 422 and err.value.code == "unsafe_callback_url"
    assert service.ledger.get("http:k") is None


def _request(callback_url: str):
    from pipeline.request import TrainingRequest

    return TrainingRequest(callback_url=callback_url)
