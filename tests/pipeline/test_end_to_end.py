"""The real pipeline (steps/) run by the local executor, as `aml-trigger run` and
through LocalSubmitter."""

from __future__ import annotations

import json

import pytest
import requests

from cli.main import main
from pipeline.local_submitter import LocalSubmitter
from pipeline.request import TrainingRequest
from pipeline.settings import Settings


@pytest.mark.slow
def test_cli_run_trains_gates_registers_deploys_and_smoke_tests(home, tmp_path, capsys):
    from steps.local_endpoint import stop_all
    from steps.sample_data import write_sample_data

    data = tmp_path / "data"
    write_sample_data(data, rows=12_000, seed=7, parts=3)
    try:
        code = main(
            [
                "run", "--data", str(data), "--deploy", "local",
                "--param", "num_boost_round=40", "--param", "min_rows=1000",
                "--param", "gate_min_score=0.5", "--param", "num_threads=2",
            ]
        )  # fmt: skip
        captured = capsys.readouterr()
        assert code == 0, captured.out + captured.err
        nodes = ("prep", "check_drift", "train", "score_champion", "evaluate", "deploy")
        for node in (*nodes, "smoke_test"):
            assert f"{node:<15} completed in" in captured.err  # live progress lines
        assert "gate: promote" in captured.out
        assert "model: porto-seguro-lgbm version 1 (champion)" in captured.out
        assert "smoke test: passed" in captured.out

        assert main(["runs", "--json"]) == 0
        (record,) = json.loads(capsys.readouterr().out)
        assert record["status"] == "completed"
        # Every step worked (unused training slots skip themselves).
        statuses = {s["name"]: s["status"] for s in record["steps"]}
        assert {v for k, v in statuses.items() if not k.startswith("train_")} == {"completed"}
        assert record["extra"]["drift"]["decision"] == "retrain"
        assert record["extra"]["drift"]["reason"].startswith("no champion yet")
        assert set(record["metrics"]) == {"auc", "normalized_gini", "log_loss", "pr_auc"}
        assert record["gate"]["decision"] == "promote" and record["gate"]["reasons"]
        assert record["model_version"] == "1"
        assert record["extra"]["smoke_test"]["passed"] is True
        assert record["endpoint"].startswith("http://127.0.0.1:")
        # The endpoint left serving is the one the run reports.
        live = requests.get(record["endpoint"].rsplit("/", 1)[0] + "/", timeout=10)
        assert live.status_code < 500
        assert (home / "mlflow" / "mlflow.db").is_file()
    finally:
        stop_all(home)


def test_a_real_step_failure_reaches_the_run_with_the_steps_own_message(home, h):
    incoming = home / "storage" / "incoming" / "bad"
    incoming.mkdir(parents=True)
    (incoming / "part-0.csv").write_text("id,ps_ind_01\n1,2\n2,3\n")
    submitter = LocalSubmitter(Settings.from_env())
    submitter.submit(TrainingRequest(data="bad/"), run_id="run-bad-data", trigger="blob")
    record = h.wait_until(
        lambda: (r := submitter.get("run-bad-data")).terminal and r, timeout=60, interval=0.05
    )
    assert record.status == "failed"
    prep = record.steps[0]
    assert prep.status == "failed" and prep.error
    assert "Traceback" not in prep.error
    assert "part-0.csv" in prep.error and "'target'" in prep.error  # names file and column
    assert record.error == f"prep: {prep.error}"
    assert all(s.status == "skipped" for s in record.steps[1:])
