"""function_app.py as the Functions host indexes and calls it."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import azure.functions as func
from azure.functions.blob import InputStream
from azure.functions.timer import TimerRequest

from triggers import entry

REPO = Path(__file__).resolve().parents[2]


def _python(code: str, env: dict[str, str] | None = None) -> str:
    import os

    run_env = {k: v for k, v in os.environ.items() if not k.startswith("BLOB_")}
    run_env.update(env or {})
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=run_env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_importing_the_app_loads_no_heavy_library():
    out = _python(
        "import sys, time; t = time.perf_counter(); import function_app; "
        "elapsed = time.perf_counter() - t; "
        "heavy = [m for m in ('azure.ai.ml', 'lightgbm', 'pandas', 'mlflow', 'sklearn') "
        "if m in sys.modules]; "
        "print(__import__('json').dumps({'heavy': heavy, 'seconds': elapsed}))"
    )
    report = json.loads(out)
    assert report["heavy"] == []
    print(f"import function_app: {report['seconds']:.3f} s")  # figure, not an assertion


def test_importing_the_app_does_not_fail_on_bad_settings():
    _python("import function_app", {"PIPELINE_BACKEND": "nope", "MAX_CONCURRENT_RUNS": "x"})


def _functions(env: dict[str, str] | None = None) -> dict[str, dict]:
    code = (
        "import json, function_app\n"
        "out = {}\n"
        "for f in function_app.app.get_functions():\n"
        "    out[f.get_function_name()] = json.loads(f.get_function_json())\n"
        "print(json.dumps(out))\n"
    )
    return json.loads(_python(code, env))


def _trigger(function_json: dict) -> dict:
    return next(b for b in function_json["bindings"] if b["type"].endswith("Trigger"))


def test_registered_functions_are_the_contract():
    functions = _functions()
    http = {
        name: (_trigger(f)["route"], _trigger(f)["methods"], _trigger(f)["authLevel"])
        for name, f in functions.items()
        if _trigger(f)["type"] == "httpTrigger"
    }
    assert http == {
        "submit_run": ("runs", ["POST"], "FUNCTION"),
        "submit_verification": ("verifications", ["POST"], "FUNCTION"),
        "list_runs": ("runs", ["GET"], "FUNCTION"),
        "get_run": ("runs/{run_id}", ["GET"], "FUNCTION"),
        "cancel_run": ("runs/{run_id}/cancel", ["POST"], "FUNCTION"),
        "run_status": ("runs/{run_id}/status", ["GET"], "FUNCTION"),
        "health": ("health", ["GET"], "ANONYMOUS"),
        "openapi": ("openapi.json", ["GET"], "ANONYMOUS"),
    }
    timer = _trigger(functions["scheduled_retrain"])
    assert timer["schedule"] == "%TRAIN_SCHEDULE%" and timer["useMonitor"] is True
    blob = _trigger(functions["incoming_blob"])
    assert blob["path"] == "%INCOMING_CONTAINER%/{name}"
    assert blob["connection"] == "AzureWebJobsStorage"
    assert blob.get("source", "LogsAndContainerScan") == "LogsAndContainerScan"
    assert {"sweep_drops", "monitor_runs"} <= set(functions)


def test_event_grid_source_is_chosen_by_setting():
    blob = _trigger(_functions({"BLOB_TRIGGER_SOURCE": "EventGrid"})["incoming_blob"])
    assert blob["source"] == "EventGrid"


def _user_function(name: str):
    import function_app

    return getattr(function_app, name).build().get_user_function()


def test_http_function_called_directly(installed, fake_submitter):
    request = func.HttpRequest(
        "POST",
        "http://localhost/api/runs",
        headers={"Content-Type": "application/json", "Idempotency-Key": "direct-1"},
        body=b'{"reason": "direct call"}',
    )
    response = _user_function("submit_run")(request)
    assert response.status_code == 202
    run = json.loads(response.get_body())
    assert response.headers["Location"] == f"http://localhost/api/runs/{run['run_id']}/status"
    got = _user_function("get_run")(
        func.HttpRequest("GET", "http://x", route_params={"run_id": run["run_id"]}, body=b"")
    )
    assert got.status_code == 200 and json.loads(got.get_body())["run_id"] == run["run_id"]
    assert fake_submitter.submissions == [run["run_id"]]


def test_blob_function_gets_name_and_uri_and_never_reads_content(installed, put, fake_submitter):
    info = put("drops/x/part-0.csv")

    class NoContent(InputStream):
        def read(self, size=-1):
            raise AssertionError("the blob function must not read the blob's content")

    stream = NoContent(
        data=b"",
        name=f"incoming/{info.name}",
        uri="http://127.0.0.1/incoming/drops/x/part-0.csv",
        length=info.size,
        blob_properties={"ETag": info.etag},
    )
    _user_function("incoming_blob")(stream)
    _user_function("incoming_blob")(
        NoContent(data=b"", name="incoming/drops/x/_SUCCESS", length=0, blob_properties={})
    )
    assert len(fake_submitter.submissions) == 1


def test_timer_ticks_are_keyed_by_their_occurrence(installed, fake_submitter):
    _user_function("scheduled_retrain")(TimerRequest(past_due=False))  # the real entry point
    day = datetime(2036, 11, 24, tzinfo=UTC)
    early = day.replace(hour=1, minute=59, second=59, microsecond=900_000)
    entry.timer("scheduled_retrain", TimerRequest(past_due=False), now=early)
    # The same occurrence delivered again hours later (a restart, past due): no new run.
    entry.timer("scheduled_retrain", TimerRequest(past_due=True), now=day.replace(hour=9))
    entry.timer("scheduled_retrain", TimerRequest(past_due=False), now=day.replace(day=25, hour=2))
    keys = [fake_submitter.get(r).idempotency_key for r in fake_submitter.submissions]
    assert keys[1:] == [
        "timer:scheduled_retrain@2036-11-24T02:00:00Z",
        "timer:scheduled_retrain@2036-11-25T02:00:00Z",
    ]
