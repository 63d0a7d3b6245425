"""scripts/trigger_and_wait.py (what both trigger-training pipelines run) against the
local Functions host over a real socket, on the local backend running a quick
pipeline: exit 0 only when the run completed, a useful message otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "trigger_and_wait.py"
KEY = "ops-test-function-key"  # conftest.FUNCTION_KEY
FAIL_SEED, SLOW_SEED = 13, 7


def trigger(url: str, *args: str, key: str | None = KEY, env: dict | None = None, timeout=60):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    environ.pop("AML_TRIGGER_FUNCTION_KEY", None)
    if key is not None:
        environ["AML_TRIGGER_FUNCTION_KEY"] = key
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--url", url, "--interval", "0.1", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=timeout,
    )


def body_file(tmp_path: Path, body: dict) -> str:
    path = tmp_path / f"request-{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps(body))
    return str(path)


def test_completed_run_exits_0_and_a_rerun_follows_the_same_run(served, quick_submitter,
                                                                tmp_path):  # fmt: skip
    summary = tmp_path / "summary.md"
    request = body_file(tmp_path, {"params": {"seed": 1}, "deploy_target": "none"})
    args = ["--idempotency-key", "commit-abc123", "--body-file", request, "--data", "drops/"]
    first = trigger(served.url, *args, env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert first.returncode == 0, first.stderr
    assert "submitted run run-" in first.stderr and "Idempotency-Key commit-abc123" in first.stderr
    run_id = first.stderr.split("submitted run ")[1].split()[0]
    assert f"run {run_id}: completed" in first.stderr
    assert f"Training run `{run_id}`: **completed**" in summary.read_text()
    again = trigger(served.url + "/api/", *args)  # the URL may end in /api
    assert again.returncode == 0, again.stderr
    assert f"run {run_id} already exists for Idempotency-Key commit-abc123" in again.stderr
    assert [r.run_id for r in quick_submitter.list_runs()] == [run_id]
    record = quick_submitter.get(run_id)
    assert record.request["data"] == "drops/" and record.request["deploy_target"] == "none"
    assert KEY not in first.stdout + first.stderr + again.stderr


def test_failed_run_exits_1_naming_the_failed_step(served, tmp_path):
    request = body_file(tmp_path, {"params": {"seed": FAIL_SEED}})
    result = trigger(served.url, "--idempotency-key", "commit-bad", "--body-file", request,
                     "--deploy", "none")  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert ": failed" in result.stderr
    assert f"step prep failed: prep refused seed {FAIL_SEED}" in result.stderr


def load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("trigger_and_wait", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flags_override_the_body_file_and_deploy_default_fills_only_a_gap(tmp_path):
    script = load_script()
    named = body_file(tmp_path, {"params": {"seed": 2}, "deploy_target": "none", "data": "a/"})
    base = ["--url", "u", "--idempotency-key", "k", "--deploy-default", "aci"]
    body = script.build_body(script.parse_args([*base, "--body-file", named, "--data", "b/"]))
    assert body == {"params": {"seed": 2}, "deploy_target": "none", "data": "b/"}
    body = script.build_body(script.parse_args([*base, "--tag", "git_sha=abc", "--reason", "r"]))
    assert body == {"tags": {"git_sha": "abc"}, "reason": "r", "deploy_target": "aci"}
    body = script.build_body(script.parse_args([*base, "--body-file", named, "--deploy", "aks"]))
    assert body["deploy_target"] == "aks"


@pytest.mark.parametrize("key", ["wrong-key", ""])
def test_wrong_or_missing_key_exits_2_without_submitting(served, quick_submitter, key):
    result = trigger(served.url, "--idempotency-key", "commit-k", key=key)
    assert result.returncode == 2
    if key:
        assert "the function key was refused (HTTP 401)" in result.stderr
        assert key not in result.stderr
    else:
        assert "set AML_TRIGGER_FUNCTION_KEY" in result.stderr
    assert quick_submitter.list_runs() == []


def test_invalid_request_exits_2_naming_each_field(served, tmp_path):
    request = body_file(tmp_path, {"params": {"seed": -1}, "colour": "red"})
    result = trigger(served.url, "--idempotency-key", "commit-x", "--body-file", request)
    assert result.returncode == 2
    assert "the request was refused (HTTP 422)" in result.stderr
    assert "params.seed" in result.stderr and "colour" in result.stderr


def test_bad_idempotency_key_and_bad_body_file_exit_2(served, tmp_path):
    result = trigger(served.url, "--idempotency-key", "has space")
    assert result.returncode == 2 and "Idempotency-Key" in result.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = trigger(served.url, "--idempotency-key", "k", "--body-file", str(broken))
    assert result.returncode == 2 and f"--body-file {broken}" in result.stderr


def test_run_still_going_at_the_timeout_exits_3(served, tmp_path):
    request = body_file(tmp_path, {"params": {"seed": SLOW_SEED}, "deploy_target": "none"})
    result = trigger(served.url, "--idempotency-key", "commit-slow", "--body-file", request,
                     "--timeout", "1.5")  # fmt: skip
    assert result.returncode == 3
    assert "is still running after 1.5s; it keeps running" in result.stderr


def test_unreachable_service_exits_3_after_the_retries(home):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = trigger(f"http://127.0.0.1:{port}", "--idempotency-key", "k", "--retries", "2")
    assert result.returncode == 3
    assert "try 2 of 2" in result.stderr
    assert f"error: no answer from the service: cannot reach http://127.0.0.1:{port}" in (
        result.stderr
    )
