"""`aml-trigger publish | schedule | compare`: usage errors and output."""

from __future__ import annotations

import json

import pytest

from cli.main import main


def test_every_azure_command_has_help(capsys):
    for argv in (
        ["publish", "--help"],
        ["schedule", "--help"],
        ["schedule", "create", "--help"],
        ["schedule", "disable", "--help"],
        ["compare", "--help"],
    ):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
        assert "usage: aml-trigger" in capsys.readouterr().out


def test_publish_without_workspace_settings_names_them(home, capsys):
    assert main(["publish"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "AML_SUBSCRIPTION_ID, AML_RESOURCE_GROUP, AML_WORKSPACE" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cron", "0 0 2 * * *"], "drop the seconds field"),
        (["--every", "1", "--unit", "hour", "--at", "02:00"], "daily or weekly"),
        (["--every", "1", "--at", "2pm"], "expected HH:MM"),
        (["--cron", "0 2 * * *", "--param", "num_leaves=1"], "num_leaves"),
        (["--cron", "0 2 * * *", "--data", "../other"], "'..'"),
    ],
)
def test_schedule_create_refuses_bad_input_before_any_call(home, capsys, argv, message):
    assert main(["schedule", "create", "nightly", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_compare_prints_the_group_side_by_side(submitter, fake_azure, wire, monkeypatch, capsys):
    import cli.azure_commands as commands

    monkeypatch.setattr(commands, "_submitter", lambda settings: submitter)
    members = [
        wire.job(
            "run-g-big",
            "Completed",
            properties={
                "aml_trigger.compute": "cpu-big",
                "StartTimeUtc": "2026-11-22T08:00:00+00:00",
                "EndTimeUtc": "2026-11-22T08:05:00+00:00",
            },
        ),
        wire.job("run-g-small", "Running", properties={"aml_trigger.compute": "cpu-small"}),
    ]
    fake_azure.on("GET", r"/jobs\?", (200, {"value": members}))

    assert main(["compare", "run-g", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["compute"], r["status"], r["duration_s"]) for r in rows] == [
        ("cpu-big", "completed", 300.0),
        ("cpu-small", "running", None),
    ]
    assert "properties=aml_trigger.comparison_group%3Drun-g" in fake_azure.sent[0].url
