"""Drift-driven retraining end to end on the local executor: with a champion in the
registry and RETRAIN_POLICY=on_drift, an undrifted drop is skipped, and `runs`,
`show` and GET /api/runs/{id} all say why, with the figures. (The first run without
a champion, and a drifted drop, are in tests/steps/test_drift.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import azure.functions as func
import pytest

from cli.main import main

pytestmark = pytest.mark.slow

RUN_ARGS = ["--deploy", "none", "--param", "min_rows=1000"]


def _runs_json(capsys) -> list[dict]:
    assert main(["runs", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _champion(home: Path, data: Path, work: Path, monkeypatch) -> None:
    """prep, train and register in this process (what a first run does, without the
    cost of ten step processes): version 1, with its training profile, is champion."""
    import mlflow

    from pipeline.local_executor import step_environment
    from steps import prep, register, train

    for key, value in step_environment(home, "aml-trigger").items():
        monkeypatch.setenv(key, value)
    assert prep.main(["--data", str(data), "--valid-fraction", "0.15", "--test-fraction",
                      "0.15", "--min-rows", "1000", "--seed", "7",
                      "--out", str(work / "prep")]) == 0  # fmt: skip
    flags = {"learning-rate": "0.1", "num-leaves": "15", "num-boost-round": "20",
             "early-stopping-rounds": "5", "min-data-in-leaf": "50", "feature-fraction": "0.8",
             "bagging-fraction": "0.8", "lambda-l2": "1.0", "class-weight": "none",
             "seed": "7", "num-threads": "2"}  # fmt: skip
    args = [item for k, v in flags.items() for item in (f"--{k}", v)]
    assert train.main(["--prepared", str(work / "prep"), "--out", str(work / "train"), *args]) == 0
    summary = register.register(
        mlflow.MlflowClient(),
        model_name="porto-seguro-lgbm",
        train=json.loads((work / "train" / "summary.json").read_text()),
        evaluation={"decision": "promote", "champion_version": None, "reasons": []},
        lineage={
            "data_location": "drops/1/",
            "trigger": "cli",
            "run_key": "k",
            "code_version": "t",
        },
    )
    assert summary["promoted"] and summary["model_version"] == "1"


def test_an_undrifted_drop_is_skipped_under_on_drift_with_the_reason_shown(
    home, tmp_path, capsys, monkeypatch
):
    from steps.sample_data import write_sample_data

    for name in ("DRIFT_PSI_THRESHOLD", "MIN_NEW_ROWS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RETRAIN_POLICY", "on_drift")
    first, second = tmp_path / "drop-1", tmp_path / "drop-2"
    write_sample_data(first, rows=5_000, seed=1, parts=2)
    write_sample_data(second, rows=5_000, seed=2, parts=2)  # same population, new rows

    _champion(home, first, tmp_path / "first", monkeypatch)

    assert main(["run", "--data", str(second), *RUN_ARGS]) == 0, capsys.readouterr()
    captured = capsys.readouterr()
    assert "check_drift     completed in" in captured.err
    assert "train           skipped in" in captured.err  # live progress: it did nothing

    (skipped,) = _runs_json(capsys)
    assert skipped["status"] == "completed"
    drift = skipped["extra"]["drift"]
    assert drift["decision"] == "skip" and drift["champion_version"] == "1"
    assert drift["max_psi"] < 0.2 and len(drift["psi"]) == 57
    assert drift["reason"] == f"no drift (max PSI {drift['max_psi']:.2f} < 0.20)"
    assert drift["new_rows"] == 5_000 and drift["policy"]["retrain_policy"] == "on_drift"
    assert skipped["model_version"] is None and skipped["gate"] is None
    steps = {s["name"]: s["status"] for s in skipped["steps"]}
    assert steps["prep"] == steps["check_drift"] == "completed"
    assert {steps[n] for n in ("train", "evaluate", "register", "deploy")} == {"skipped"}

    assert main(["runs"]) == 0
    table = capsys.readouterr().out.splitlines()
    row = next(line for line in table if line.startswith(skipped["run_id"]))
    assert row.endswith(f"skipped: no drift (max PSI {drift['max_psi']:.2f} < 0.20)")

    assert main(["show", skipped["run_id"]]) == 0
    shown = capsys.readouterr().out
    assert f"drift: skipped: {drift['reason']}" in shown
    assert "top PSI: " in shown and "target rate " in shown
    assert "model:" not in shown  # nothing was registered

    # The HTTP API returns the same record.
    import function_app
    from triggers import runtime

    runtime.reset()
    try:
        handler = function_app.get_run.build().get_user_function()
        request = func.HttpRequest(
            "GET", "http://x", route_params={"run_id": skipped["run_id"]}, body=b""
        )
        response = handler(request)
    finally:
        runtime.reset()
    assert response.status_code == 200
    assert json.loads(response.get_body())["extra"]["drift"] == drift
