"""function_app.py as the Functions host indexes and calls it."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import azure.functions as func
from azure.functions.timer import TimerRequest

from triggers import entry
from triggers.queues import DROP_QUEUE
from triggers.schedule import CronSchedule

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
    # Flex Consumption runs blob triggers only from Event Grid: the default, no setting.
    assert blob["source"] == "EventGrid"
    queue = _trigger(functions["drop_window"])
    assert queue["type"] == "queueTrigger" and queue["queueName"] == DROP_QUEUE
    assert queue["connection"] == "AzureWebJobsStorage"
    assert _trigger(functions["run_ended"])["type"] == "eventGridTrigger"
    assert {"sweep_drops", "monitor_runs"}.isdisjoint(functions)  # replaced by events


def test_an_idle_hour_costs_at_most_twelve_timer_executions_besides_the_retrain():
    start = datetime(2036, 11, 24, tzinfo=UTC)
    end = start + timedelta(days=1)
    per_hour = 0.0
    for name, function in _functions().items():
        trigger = _trigger(function)
        if trigger["type"] != "timerTrigger" or name == "scheduled_retrain":
            continue
        ticks = CronSchedule.parse(trigger["schedule"]).occurrences(start, end)
        gaps = [(b - a).total_seconds() for a, b in zip(ticks, ticks[1:], strict=False)]
        assert min(gaps) >= 300, f"{name} fires every {min(gaps):.0f}s"
        per_hour += len(ticks) / 24
    assert 0 < per_hour <= 12  # the safety net is there, and cheap


def test_the_worker_indexes_the_blob_function_as_a_deferred_sdk_type_binding():
    """What the Python worker sends the host for the blob function (its loader's
    process_indexed_function -> get_fx_raw_bindings): the argument's resolved type
    hint goes to the base extension's registry, which marks the binding
    SupportsDeferredBinding, so the host sends a reference instead of the bytes."""
    import typing
    from types import SimpleNamespace

    from azurefunctions.extensions.base import get_binding_registry

    import function_app
    from triggers.host.functions import registered_functions

    [function] = [
        f for f in registered_functions(function_app.app)
        if f.get_function_name() == "incoming_blob"
    ]  # fmt: skip
    registry = get_binding_registry()
    hints = typing.get_type_hints(function.get_user_function())
    input_types = {
        b.name: SimpleNamespace(binding_name=b.type, pytype=hints.get(b.name))
        for b in function.get_bindings()
    }
    assert any(registry.check_supported_type(t.pytype) for t in input_types.values())
    raw, logs = registry.get_raw_bindings(function, input_types)
    [binding] = [json.loads(r) for r in raw if json.loads(r)["type"] == "blobTrigger"]
    assert binding["properties"] == {"SupportsDeferredBinding": True}
    assert binding["source"] == "EventGrid" and binding["direction"] == "IN"
    # The worker decodes the host's model binding data into an azure-storage-blob client.
    from azure.storage.blob import BlobClient

    assert issubclass(hints[binding["name"]], BlobClient)


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


def test_blob_function_reads_a_reference_never_the_content(installed, landed, fake_submitter):
    class PropertiesOnly:
        """A bound blob that refuses everything but the one call the function may make."""

        def __init__(self, client) -> None:
            self._client, self.calls = client, []

        def __getattr__(self, name):
            if name not in ("container_name", "blob_name", "url", "get_blob_properties"):
                raise AssertionError(f"the blob function must not use {name}")
            self.calls.append(name)
            return getattr(self._client, name)

    part = PropertiesOnly(landed("drops/x/part-0.csv"))
    _user_function("incoming_blob")(part)
    marker = PropertiesOnly(landed("drops/x/_SUCCESS", b""))
    _user_function("incoming_blob")(marker)
    assert part.calls.count("get_blob_properties") == 1
    assert len(fake_submitter.submissions) == 1
    record = fake_submitter.get(fake_submitter.submissions[0])
    assert record.request["data"] == "drops/x/"


def test_a_blob_deleted_before_its_event_is_handled_is_no_run_and_no_failure(
    installed, landed, home, fake_submitter
):
    client = landed("drops/gone/_SUCCESS", b"")
    (home / "storage" / "incoming" / "drops" / "gone" / "_SUCCESS").unlink()
    _user_function("incoming_blob")(client)  # no exception: the host would retry it
    assert fake_submitter.submissions == []


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
