"""On the aml backend a run lists its steps, each with status and duration, read from
the pipeline job's child jobs in the run history service, as runs list them locally."""

from __future__ import annotations

import json

import azure.functions as func

from cli.main import main


def _children(wire):
    return [
        wire.child_run("prep", "Completed", "2026-11-22T08:01:00Z", "2026-11-22T08:03:30Z"),
        wire.child_run("check_drift", "Completed", "2026-11-22T08:03:40Z", "2026-11-22T08:04:00Z"),
        wire.child_run(
            "train",
            "Failed",
            "2026-11-22T08:04:10Z",
            "2026-11-22T08:05:10Z",
            error={"error": {"code": "UserError", "message": "error: --num-leaves=1:  too low"}},
        ),
        wire.child_run("score_champion", "Running", "2026-11-22T08:04:10Z", None),
        wire.child_run("select_best", "NotStarted", None, None),
    ]


def _running_job(fake_azure, wire, name="run-s1"):
    job = wire.job(name, "Running", properties={"StartTimeUtc": "2026-11-22T08:00:30Z"})
    fake_azure.on("GET", rf"/jobs/{name}\?", (200, job))
    wire.run_history(fake_azure, {name: _children(wire)})


def test_get_lists_each_step_with_status_and_duration(submitter, fake_azure, wire):
    _running_job(fake_azure, wire)

    record = submitter.get("run-s1")

    steps = {s.name: s for s in record.steps}
    assert [s.name for s in record.steps] == [
        "prep", "check_drift", "score_champion", "train", "select_best",
    ]  # fmt: skip
    assert (steps["prep"].status, steps["prep"].duration_s) == ("completed", 150.0)
    assert (steps["check_drift"].status, steps["check_drift"].duration_s) == ("completed", 20.0)
    assert steps["train"].status == "failed" and steps["train"].duration_s == 60.0
    assert steps["train"].error == "error: --num-leaves=1: too low"
    assert steps["score_champion"].status == "running"
    assert steps["score_champion"].duration_s is None
    assert steps["select_best"].status == "pending"
    children = fake_azure.requests("GET", "/runs/run-s1/children")
    assert len(children) == 1 and children[0].url.startswith("https://westeurope.api.azureml.ms/")
    assert not fake_azure.unrouted


def test_runs_list_steps_for_every_started_run(submitter, fake_azure, wire):
    fake_azure.on(
        "GET",
        r"/jobs\?",
        (200, {"value": [wire.job("run-s1", "Running"), wire.job("run-s2", "Queued")]}),
    )
    wire.run_history(fake_azure, {"run-s1": _children(wire)})

    records = {r.run_id: r for r in submitter.list_runs(limit=5)}

    assert len(records["run-s1"].steps) == 5
    assert records["run-s2"].steps == []  # queued: no child jobs yet, none asked for
    assert not fake_azure.requests("GET", "/runs/run-s2/children")


def test_a_failure_to_read_the_steps_keeps_the_run_and_says_why(submitter, fake_azure, wire):
    fake_azure.on("GET", r"/jobs/run-s1\?", (200, wire.job("run-s1", "Running")))
    wire.run_history(fake_azure, {})
    fake_azure.on(
        "GET", r"/runs/run-s1/children", wire.error(403, "AuthorizationFailed", "no read")
    )

    record = submitter.get("run-s1")

    assert record.status == "running" and record.steps == []
    assert "reading the steps of run-s1" in record.extra["steps_error"]


def test_http_get_run_and_cli_show_list_the_steps(
    aml_env, submitter, fake_azure, wire, monkeypatch, capsys
):
    from pipeline.settings import Settings
    from triggers import http_api, runtime

    _running_job(fake_azure, wire)
    runtime.install(runtime.build_service(Settings.from_env(), submitter=submitter))
    try:
        response = http_api.get_run(
            func.HttpRequest("GET", "http://x", route_params={"run_id": "run-s1"}, body=b"")
        )
    finally:
        runtime.reset()
    assert response.status_code == 200
    body = json.loads(response.get_body())
    assert [(s["name"], s["status"], s["duration_s"]) for s in body["steps"][:2]] == [
        ("prep", "completed", 150.0),
        ("check_drift", "completed", 20.0),
    ]

    import cli.pipeline_commands as commands

    monkeypatch.setattr(commands, "_submitter", lambda: submitter)
    assert main(["show", "run-s1"]) == 0
    out = capsys.readouterr().out
    assert "steps:" in out
    assert "prep" in out and "150.0s" in out
    assert "error: error: --num-leaves=1: too low" in out
