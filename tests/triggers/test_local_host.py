"""The local host serving function_app over real sockets."""

from __future__ import annotations

import json

import pytest
import requests

import function_app
from pipeline.settings import Settings
from pipeline.submitter import SubmissionError
from triggers import runtime
from triggers.host.local_host import LocalHost

KEY = "test-function-key"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def host(home, service):
    settings = Settings.from_env({"AML_TRIGGER_HOME": str(home)})
    local = LocalHost(
        function_app.app,
        settings,
        port=_free_port(),
        key=KEY,
        watch_blobs=False,
        run_timers=False,
    )
    local.start(service=service)
    yield local
    local.stop()
    runtime.reset()


def call(host, method, path, *, key=KEY, json_body=None, data=None, headers=None, params=None):
    all_headers = {"x-functions-key": key} if key else {}
    all_headers.update(headers or {})
    if json_body is not None:
        data = json.dumps(json_body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    return requests.request(
        method,
        f"{host.url}/api/{path}",
        data=data,
        headers=all_headers,
        params=params,
        timeout=10,
    )


def error_of(response) -> dict:
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body["error"]) == {"code", "message", "details"}
    return body["error"]


# --- auth ---------------------------------------------------------------------------------
def test_key_in_header_or_query_is_accepted(host):
    assert call(host, "GET", "runs").status_code == 200
    assert call(host, "GET", "runs", key=None, params={"code": KEY}).status_code == 200


@pytest.mark.parametrize("key", [None, "wrong", KEY + "x", ""])
def test_missing_or_wrong_key_is_401_with_an_empty_body_as_on_azure(host, key):
    response = call(host, "GET", "runs", key=key)
    assert response.status_code == 401
    assert response.content == b"" and "Content-Type" not in response.headers


def test_health_and_openapi_are_anonymous(host):
    assert call(host, "GET", "health", key=None).json() == {"status": "ok"}
    doc = call(host, "GET", "openapi.json", key=None).json()
    assert doc["openapi"] == "3.1.0"
    schemas = doc["components"]["schemas"]
    assert {"TrainingRequest", "RunRecord", "TrainParams", "Error"} <= set(schemas)
    post = doc["paths"]["/runs"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/TrainingRequest"
    )
    assert {"202", "200", "400", "401", "413", "415", "422"} <= set(post["responses"])


# --- submitting ---------------------------------------------------------------------------
def test_post_runs_is_202_with_location_and_a_repeat_is_200(host, fake_submitter):
    headers = {"Idempotency-Key": "abc-1"}
    first = call(host, "POST", "runs", json_body={"reason": "r"}, headers=headers)
    assert first.status_code == 202
    run_id = first.json()["run_id"]
    assert first.headers["Location"] == f"{host.url}/api/runs/{run_id}/status"
    again = call(host, "POST", "runs", json_body={"reason": "r"}, headers=headers)
    assert again.status_code == 200 and again.json()["run_id"] == run_id
    assert call(host, "GET", f"runs/{run_id}").json()["status"] == "queued"
    assert [r["run_id"] for r in call(host, "GET", "runs").json()["runs"]] == [run_id]
    canceled = call(host, "POST", f"runs/{run_id}/cancel")
    assert canceled.status_code == 202 and canceled.json()["status"] == "canceled"
    assert fake_submitter.submissions == [run_id]


def test_dry_run_is_200_and_records_nothing(host, fake_submitter):
    response = call(host, "POST", "runs", json_body={"dry_run": True})
    assert response.status_code == 200 and response.json()["dry_run"] is True
    assert fake_submitter.calls == 0


def test_key_reused_with_another_body_is_422_naming_it(host):
    call(host, "POST", "runs", json_body={"reason": "a"}, headers={"Idempotency-Key": "k9"})
    response = call(host, "POST", "runs", json_body={"reason": "b"},
                    headers={"Idempotency-Key": "k9"})  # fmt: skip
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "idempotency_key_reused" and "'k9'" in error["message"]


# --- every bad input is a JSON 4xx, never a 500 -------------------------------------------
def test_malformed_json_is_400_with_its_position(host):
    response = call(
        host, "POST", "runs", data=b'{"reason": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "malformed_json" and "line 1 column 12" in error["message"]
    assert error["details"] == [{"line": 1, "column": 12, "position": 11}]


def test_invalid_fields_are_422_each_named_with_value_and_accepted(host):
    body = {
        "params": {"num_leaves": 1, "learning_rate": "fast"},
        "split": {"valid_fraction": 0.7},
        "data": "https://evil.example.com/x",
        "compute": ["ok-name", "9bad"],
        "colour": "red",
    }
    response = call(host, "POST", "runs", json_body=body)
    assert response.status_code == 422
    details = {d["path"]: d for d in error_of(response)["details"]}
    assert set(details) == {
        "params.num_leaves",
        "params.learning_rate",
        "split.valid_fraction",
        "data",
        "compute",
        "colour",
    }
    assert details["params.num_leaves"]["value"] == 1
    assert "greater than or equal to 2" in details["params.num_leaves"]["message"]
    assert "less than 0.5" in details["split.valid_fraction"]["message"]
    assert "URLs and other accounts are not accepted" in details["data"]["message"]
    assert "'9bad'" in details["compute"]["message"]
    assert "unknown field" in details["colour"]["message"]
    assert "errors.pydantic.dev" not in response.text


def test_body_that_is_not_an_object_is_422(host):
    response = call(host, "POST", "runs", json_body=[1, 2])
    assert response.status_code == 422 and "not an array" in response.text
    assert error_of(response)["details"][0]["path"] == "$"


def test_oversized_body_is_413(host):
    big = {"reason": "x", "tags": {"a": "y" * 70_000}}
    response = call(host, "POST", "runs", json_body=big)
    assert response.status_code == 413
    assert "REQUEST_MAX_BYTES" in error_of(response)["message"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(host, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = call(host, "POST", "runs", data=b"{}", headers=headers)
    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"


def test_bad_idempotency_key_is_422(host):
    response = call(host, "POST", "runs", json_body={}, headers={"Idempotency-Key": "a b"})
    assert response.status_code == 422
    assert error_of(response)["details"][0]["path"] == "Idempotency-Key"


def test_unknown_run_is_404(host):
    for path in ("runs/run-doesnotexist", "runs/NOT..VALID", "runs/run-nope/cancel"):
        method = "POST" if path.endswith("cancel") else "GET"
        response = call(host, method, path)
        assert response.status_code == 404, path
        assert error_of(response)["code"] == "run_not_found"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "nothing-here"),
        ("DELETE", "runs"),
        ("PUT", "runs/run-abc/cancel"),
        ("TRACE", "runs"),
        ("BREW", "runs"),
        ("HEAD", "runs"),
    ],
)
def test_no_route_and_wrong_method_are_404_with_an_empty_body_as_on_azure(host, method, path):
    response = call(host, method, path)
    assert response.status_code == 404
    assert response.content == b"" and "Content-Type" not in response.headers


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (SubmissionError("unauthorized", "the identity has no access to workspace w"), 502),
        (SubmissionError("unavailable", "Azure ML did not answer", retryable=True), 503),
    ],
)
def test_backend_refusal_is_502_or_503_with_its_message(host, fake_submitter, error, status):
    fake_submitter.fail_with = error
    response = call(host, "POST", "runs", json_body={})
    assert response.status_code == status
    assert error.message in error_of(response)["message"]
    assert "Traceback" not in response.text


def test_no_secret_or_trace_in_an_unexpected_failure(host, fake_submitter):
    fake_submitter.fail_with = RuntimeError("boom with secret AccountKey=abc")
    response = call(host, "POST", "runs", json_body={})
    assert response.status_code == 500
    assert "AccountKey" not in response.text and "Traceback" not in response.text


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"params": {"learning_rate": NaN}}', 400),
        (b"\xff\xfe{}", 400),
        (b'{"params": {"seed": 1e400}}', 422),
        (b'{"params": {"seed": 99999999999999999999999999}}', 422),
        (b"null", 422),
        (b'{"tags": {"bad key": "x"}}', 422),
        (b'{"callback_url": "ftp://x.example.com/"}', 422),
    ],
)
def test_odd_bodies_get_json_4xx(host, body, status):
    response = call(host, "POST", "runs", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    assert error_of(response)["message"]
    json.loads(response.text, parse_constant=pytest.fail)  # no NaN/Infinity echoed back


def test_empty_post_is_a_run_with_defaults(host, fake_submitter):
    response = call(host, "POST", "runs", data=b"")
    assert response.status_code == 202
    assert response.json()["request"]["params"]["num_leaves"] == 31


def test_chunked_body_is_refused_rather_than_ignored(host, fake_submitter):
    def chunks():
        yield b'{"reason": '
        yield b'"chunked"}'

    response = call(
        host, "POST", "runs", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 411
    assert fake_submitter.calls == 0
