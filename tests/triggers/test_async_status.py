"""The asynchronous request-reply pattern over real sockets, with the test playing the
Logic Apps HTTP action: POST, then GET the 202's Location after Retry-After seconds,
without the first call's headers, until the answer is not 202."""

from __future__ import annotations

import socket
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

import function_app
from pipeline.settings import Settings
from triggers import runtime
from triggers.host.local_host import LocalHost
from triggers.openapi import openapi_document

# Characters that must survive being put into the Location URL and read back.
KEY = "k+ey/with=chars&more"
RETRY_AFTER = 7
SLEEP_SCALE = 0.001  # Retry-After 7 s -> 7 ms in the test


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(home, service) -> LocalHost:
    local = LocalHost(
        function_app.app,
        Settings.from_env({"AML_TRIGGER_HOME": str(home)}),
        port=_free_port(),
        key=KEY,
        watch_blobs=False,
        run_timers=False,
    )
    local.start(service=service)
    return local


@pytest.fixture
def host(home, make_service):
    local = _start(home, make_service(STATUS_RETRY_AFTER_SECONDS=str(RETRY_AFTER)))
    yield local
    local.stop()
    runtime.reset()


class LogicAppsHttpAction:
    """What the Logic Apps HTTP action does with the async pattern on: the first call
    carries the action's headers and query; each poll is a bare GET of Location."""

    def __init__(self, on_poll=lambda n: None) -> None:
        self.on_poll = on_poll  # the backend making progress between polls
        self.polled: list[str] = []
        self.waited: list[float] = []

    def run(self, method: str, url: str, **kwargs) -> requests.Response:
        response = requests.request(method, url, timeout=10, **kwargs)
        while response.status_code == 202:
            location = response.headers["Location"]
            assert urlsplit(location).scheme in ("http", "https"), "Location must be absolute"
            delay = int(response.headers["Retry-After"])
            self.waited.append(delay)
            self.on_poll(len(self.polled))
            time.sleep(delay * SLEEP_SCALE)
            self.polled.append(location)
            response = requests.get(location, timeout=10)
        return response


def _progress(fake_submitter, ending: str, **fields):
    """on_poll hook: queued at the first poll, running at the second, `ending` after."""

    def step(n: int) -> None:
        (run_id,) = fake_submitter.runs
        if n == 1:
            fake_submitter.finish(run_id, "running")
        elif n == 2:
            fake_submitter.finish(run_id, ending, **fields)

    return step


COMPLETED = {
    "finished_at": "2026-11-26T03:12:00+00:00",
    "metrics": {"auc": 0.64, "gini": 0.28},
    "gate": {"decision": "promote", "reasons": ["gini 0.28 >= 0.25"]},
    "model_version": "7",
    "endpoint": "http://127.0.0.1:5001/score",
}


def test_logic_app_waits_for_a_completed_run_and_gets_its_summary(host, fake_submitter):
    action = LogicAppsHttpAction(on_poll=_progress(fake_submitter, "completed", **COMPLETED))
    final = action.run(
        "POST",
        f"{host.url}/api/runs",
        params={"code": KEY},
        json={"reason": "weekly retrain", "deploy_target": "none"},
        headers={"Idempotency-Key": "logic-app-run-1"},
    )
    assert final.status_code == 200
    summary = final.json()
    (run_id,) = fake_submitter.runs
    assert summary["run_id"] == run_id and summary["status"] == "completed"
    assert summary["metrics"] == COMPLETED["metrics"]
    assert summary["gate_decision"] == "promote"
    assert summary["gate_reasons"] == ["gini 0.28 >= 0.25"]
    assert summary["model_version"] == "7"
    assert summary["endpoint"] == "http://127.0.0.1:5001/score"
    assert summary["run_url"] == f"{host.url}/api/runs/{run_id}"
    assert summary["error"] is None
    # Two 202s from the status route (queued, running), then the 200; every wait
    # was the configured Retry-After, and every poll carried the key in Location.
    assert action.waited == [RETRY_AFTER] * 3
    assert len(action.polled) == 3
    for location in action.polled:
        parts = urlsplit(location)
        assert f"{parts.scheme}://{parts.netloc}" == host.url
        assert parts.path == f"/api/runs/{run_id}/status"
        assert parse_qs(parts.query) == {"code": [KEY]}
    assert fake_submitter.submissions == [run_id]


@pytest.mark.parametrize(
    "ending, fields",
    [
        ("failed", {"error": "step train failed: label column 'target' not found"}),
        ("canceled", {}),
    ],
)
def test_a_run_that_did_not_complete_ends_the_wait_with_200_and_its_status(
    host, fake_submitter, ending, fields
):
    action = LogicAppsHttpAction(on_poll=_progress(fake_submitter, ending, **fields))
    final = action.run("POST", f"{host.url}/api/runs", params={"code": KEY}, json={"reason": "r"})
    assert final.status_code == 200
    summary = final.json()
    assert summary["status"] == ending
    assert summary["error"] == fields.get("error")
    assert summary["model_version"] is None and summary["metrics"] == {}
    assert "Retry-After" not in final.headers and "Location" not in final.headers


def test_the_final_body_is_the_documented_run_summary(host, fake_submitter):
    action = LogicAppsHttpAction(on_poll=_progress(fake_submitter, "completed", **COMPLETED))
    final = action.run("POST", f"{host.url}/api/runs", params={"code": KEY}, json={})
    schema = openapi_document()["components"]["schemas"]["RunSummary"]
    assert set(final.json()) == set(schema["properties"])
    assert set(schema["required"]) <= set(final.json())
    status = openapi_document()["paths"]["/runs/{run_id}/status"]["get"]["responses"]
    assert set(status["202"]["headers"]) == {"Location", "Retry-After"}
    assert status["200"]["content"]["application/json"]["schema"]["$ref"].endswith("RunSummary")


def test_a_header_key_is_not_copied_into_location(host, fake_submitter):
    first = requests.post(
        f"{host.url}/api/runs", json={}, headers={"x-functions-key": KEY}, timeout=10
    )
    assert first.status_code == 202
    location = first.headers["Location"]
    assert urlsplit(location).query == "" and KEY not in location
    # A poller that does not re-send headers (Logic Apps) is refused here, which is
    # why the workflow sends its key as ?code=; a poller that does (curl) goes on.
    assert requests.get(location, timeout=10).status_code == 401
    polled = requests.get(location, headers={"x-functions-key": KEY}, timeout=10)
    assert polled.status_code == 202 and polled.json()["status"] == "queued"


def test_a_repeated_post_is_200_and_still_points_at_the_status(host, fake_submitter):
    post = {"params": {"code": KEY}, "json": {}, "headers": {"Idempotency-Key": "same"}}
    first = requests.post(f"{host.url}/api/runs", timeout=10, **post)
    again = requests.post(f"{host.url}/api/runs", timeout=10, **post)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Retry-After"] == str(RETRY_AFTER)
    fake_submitter.finish(first.json()["run_id"], "completed")
    done = requests.post(f"{host.url}/api/runs", timeout=10, **post)
    assert done.status_code == 200 and done.json()["status"] == "completed"
    assert done.headers["Location"] == first.headers["Location"]
    assert "Retry-After" not in done.headers  # nothing left to wait for


def test_unknown_run_is_404_in_the_api_error_shape(host):
    for run_id in ("run-000000000000000000000000", "Not_A_Run_Id!"):
        response = requests.get(
            f"{host.url}/api/runs/{run_id}/status", params={"code": KEY}, timeout=10
        )
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == "run_not_found" and run_id in error["message"]
        assert set(error) == {"code", "message", "details"}


@pytest.mark.parametrize("key", [None, "wrong"])
def test_status_route_needs_the_function_key(host, fake_submitter, key):
    created = requests.post(f"{host.url}/api/runs", params={"code": KEY}, json={}, timeout=10)
    run_id = created.json()["run_id"]
    params = {"code": key} if key else None
    response = requests.get(f"{host.url}/api/runs/{run_id}/status", params=params, timeout=10)
    assert response.status_code == 401 and response.content == b""  # as Azure's host


def test_location_follows_public_base_url_when_set(home, make_service, fake_submitter):
    service = make_service(PUBLIC_BASE_URL="https://retrain.contoso.example/")
    local = _start(home, service)
    try:
        response = requests.post(f"{local.url}/api/runs", params={"code": KEY}, json={}, timeout=10)
    finally:
        local.stop()
        runtime.reset()
    run_id = response.json()["run_id"]
    location = urlsplit(response.headers["Location"])
    assert (location.scheme, location.netloc) == ("https", "retrain.contoso.example")
    assert location.path == f"/api/runs/{run_id}/status"
    assert response.headers["Retry-After"] == "30"  # the default
