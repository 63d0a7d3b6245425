"""The run-related commands: parameter validation, runs, show, cancel."""

from __future__ import annotations

import json

import pytest

from cli.main import main
from pipeline.local_submitter import LocalSubmitter
from pipeline.request import TrainingRequest
from pipeline.settings import Settings


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ("learning_rte=0.1", "--param learning_rte: unknown parameter; accepted: learning_rate,"),
        ("learning_rate=2", "--param learning_rate=2.0: Input should be less than or equal to 1"),
        ("num_leaves=1", "--param num_leaves=1: Input should be greater than or equal to 2"),
        ("num_leaves=many", "--param num_leaves=many: expected an integer"),
        ("class_weight=heavy", "--param class_weight=heavy: accepted: none, balanced"),
        ("valid_fraction=0.5", "--param valid_fraction=0.5: Input should be less than 0.5"),
        ("endpoint_name=Bad_Name", "endpoint_name 'Bad_Name' (8 characters): accepted: 3-32"),
        ("seed", "--param 'seed': expected KEY=VALUE"),
    ],
)
def test_run_refuses_bad_params_before_starting_anything(home, data_dir, capsys, param, expected):
    code = main(["run", "--data", str(data_dir), "--param", param])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    assert err.count("\n") == 1  # one line, no traceback
    assert not (home / "runs").exists()


def test_unknown_param_lists_every_accepted_key(home, data_dir, capsys):
    main(["run", "--data", str(data_dir), "--param", "nope=1"])
    err = capsys.readouterr().err
    for key in (
        "num_boost_round",
        "min_rows",
        "gate_max_regression",
        "model_name",
        "endpoint_name",
    ):
        assert key in err


def test_run_refuses_a_missing_data_folder(home, tmp_path, capsys):
    assert main(["run", "--data", str(tmp_path / "none")]) == 2
    assert "--data" in capsys.readouterr().err


def test_settings_errors_exit_2_with_the_setting_named(home, monkeypatch, capsys):
    monkeypatch.setenv("MAX_CONCURRENT_RUNS", "0")
    assert main(["runs"]) == 2
    assert "MAX_CONCURRENT_RUNS" in capsys.readouterr().err


def test_runs_show_and_cancel_read_the_local_records(home, tmp_path, h, capsys):
    path = h.write_pipeline(
        tmp_path / "p", {"prep": {}, "train": {"after": ["prep"], "args": "--fail 'no rows'"}}
    )
    incoming = home / "storage" / "incoming" / "d"
    incoming.mkdir(parents=True)
    submitter = LocalSubmitter(Settings.from_env(), pipeline_path=path)
    submitter.submit(TrainingRequest(data="d/"), run_id="run-cli", trigger="http")
    h.wait_until(lambda: submitter.get("run-cli").terminal)

    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    assert "run-cli" in out and "failed" in out and "train: no rows" in out

    assert main(["show", "run-cli"]) == 0
    out = capsys.readouterr().out
    assert "run run-cli: failed" in out
    assert "prep" in out and "completed" in out
    assert "error: no rows" in out and "train.log" in out

    assert main(["show", "run-cli", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["steps"][1]["error"] == "no rows"

    assert main(["runs", "--json", "--limit", "5"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == ["run-cli"]

    assert main(["cancel", "run-cli"]) == 1
    assert "already failed" in capsys.readouterr().out
    assert main(["show", "run-missing"]) == 2
    assert "no run named 'run-missing'" in capsys.readouterr().err


def test_run_names_a_bad_experiment_option(home, data_dir, capsys):
    assert main(["run", "--data", str(data_dir), "--experiment", "no spaces"]) == 2
    assert "--experiment=no spaces: String should match" in capsys.readouterr().err


def test_sample_data_writes_the_requested_parts(home, tmp_path, capsys):
    out = tmp_path / "sample"
    assert (
        main(["sample-data", "--rows", "300", "--seed", "5", "--out", str(out), "--parts", "2"])
        == 0
    )
    files = sorted(p.name for p in out.iterdir())
    assert files == ["part-00000.csv", "part-00001.csv"]
    rows = sum(len(p.read_text().splitlines()) - 1 for p in out.iterdir())
    assert rows == 300
    assert "wrote 2 file(s)" in capsys.readouterr().err
    assert main(["sample-data", "--rows", "10", "--out", str(out), "--parts", "0"]) == 2
    assert "--parts" in capsys.readouterr().err
