"""The steps in pipeline order, with a local blue/green deployment.

Run 1 trains, promotes and deploys v1. Run 2's candidate is rejected by the gate:
deploy is skipped and v1 keeps serving. Run 3's candidate is promoted but cannot
load in the scoring server: the smoke test fails, v1 keeps serving and the
champion is back on v1 (its promotion revoked). Steps are called through their CLIs in-process
(the same argv the executor passes); the scoring servers are real processes.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import mlflow
import pytest

from steps import deploy, evaluate, prep, register, score_champion, smoke_test, train
from steps.champion import current_champion
from steps.local_endpoint import current, stop_all

from .conftest import mlflow_env, prep_args, train_args, use_env

pytestmark = pytest.mark.slow

MODEL = "porto-e2e"
ENDPOINT = "porto-e2e"


@pytest.fixture
def pipeline_home(home, monkeypatch):
    use_env(monkeypatch, mlflow_env(home, experiment="e2e"))
    yield home
    stop_all(home)  # no server outlives the test, whatever happened


def read(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def run_pipeline(work: Path, data: Path, *, gate_min: str, gate_regression: str = "0.005",
                 rounds: str = "60", prepared: Path | None = None) -> dict[str, int]:  # fmt: skip
    """Run every step in order; returns each step's exit code (stopping at a failure)."""
    codes: dict[str, int] = {}
    prepared = prepared or work / "prep"
    if not (prepared / "summary.json").exists():
        codes["prep"] = prep.main(prep_args(data, prepared))
    codes["train"] = train.main(train_args(prepared, work / "train", num_boost_round=rounds))
    codes["score_champion"] = score_champion.main(
        ["--prepared", str(prepared), "--model-name", MODEL, "--out", str(work / "champion")]
    )
    codes["evaluate"] = evaluate.main(
        ["--prepared", str(prepared), "--model", str(work / "train"),
         "--champion", str(work / "champion"), "--gate-metric", "auc",
         "--gate-min-score", gate_min, "--gate-max-regression", gate_regression,
         "--out", str(work / "evaluation")]
    )  # fmt: skip
    codes["register"] = register.main(
        ["--model", str(work / "train"), "--evaluation", str(work / "evaluation"),
         "--model-name", MODEL, "--data-location", "drops/1/", "--trigger", "manual",
         "--run-key", work.name, "--code-version", "test", "--out", str(work / "registration")]
    )  # fmt: skip
    codes["deploy"] = deploy.main(
        ["--registration", str(work / "registration"), "--prepared", str(prepared),
         "--target", "local", "--endpoint-name", ENDPOINT, "--out", str(work / "deployment")]
    )  # fmt: skip
    if codes["deploy"] == 0:
        codes["smoke_test"] = smoke_test.main(
            ["--deployment", str(work / "deployment"), "--prepared", str(prepared),
             "--out", str(work / "report")]
        )  # fmt: skip
    return codes


def score_one(uri: str, prepared: Path) -> dict:
    rows = smoke_test.sample_rows(prepared, 1)
    request = urllib.request.Request(
        uri, data=json.dumps({"data": rows}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.loads(response.read())


def test_promote_then_reject_then_failed_deploy_keeps_v1_serving(
    pipeline_home, small_data, tmp_path, capsys
):
    # Run 1: first model, promoted and deployed.
    run1 = tmp_path / "run1"
    codes = run_pipeline(run1, small_data, gate_min="0.55")
    assert set(codes.values()) == {0}, (codes, capsys.readouterr().err)
    prepared = run1 / "prep"
    assert read(run1 / "evaluation")["decision"] == "promote"
    assert read(run1 / "registration")["model_version"] == "1"
    deployed = read(run1 / "deployment")
    assert deployed["deployment"] == "blue" and deployed["model_version"] == "1"
    report = read(run1 / "report")
    assert report["passed"] is True and report["rows"] == 50
    live = current(pipeline_home, ENDPOINT)
    assert live["alive"] and live["scoring_uri"] == deployed["scoring_uri"]
    assert score_one(live["scoring_uri"], prepared)["model_version"] == "1"

    # Run 2: the candidate misses the floor; nothing moves.
    run2 = tmp_path / "run2"
    codes = run_pipeline(run2, small_data, gate_min="0.99", rounds="3", prepared=prepared)
    assert set(codes.values()) == {0}, (codes, capsys.readouterr().err)
    evaluation = read(run2 / "evaluation")
    assert evaluation["decision"] == "reject" and evaluation["champion_version"] == "1"
    assert "below the floor 0.9900" in evaluation["reasons"][0]
    assert read(run2 / "registration")["promoted"] is False
    assert "not promoted" in read(run2 / "deployment")["skipped_reason"]
    assert read(run2 / "report")["skipped_reason"].startswith("deploy skipped")
    assert current(pipeline_home, ENDPOINT)["scoring_uri"] == live["scoring_uri"]
    assert score_one(live["scoring_uri"], prepared)["model_version"] == "1"

    # Run 3: promoted, but its model files are broken, so the new server cannot start.
    run3 = tmp_path / "run3"
    client = mlflow.MlflowClient()
    original_register = register.register

    def register_then_break(client_, **kwargs):
        summary = original_register(client_, **kwargs)
        run_id = kwargs["train"]["mlflow_run_id"]
        artifacts = client_.get_run(run_id).info.artifact_uri + "/model"
        (Path(artifacts.removeprefix("file://")) / "model.lgb").write_text("not a model")
        return summary

    register.register = register_then_break
    try:
        codes = run_pipeline(run3, small_data, gate_min="0.5", gate_regression="1.0",
                             rounds="5", prepared=prepared)  # fmt: skip
    finally:
        register.register = original_register
    err = capsys.readouterr().err
    assert codes["register"] == 0 and codes["deploy"] == 2, (codes, err)
    assert read(run3 / "registration")["promoted"] is True
    message = [line for line in err.splitlines() if line.startswith("error: ")][-1]
    assert "new deployment green (model v3) failed" in message
    assert "the old deployment blue (model v1) keeps serving" in message
    assert "the champion is back on v1" in message
    assert current_champion(client, MODEL) == "1"
    assert client.get_model_version(MODEL, "3").tags["deploy"] == "failed"
    live_after = current(pipeline_home, ENDPOINT)
    assert live_after["deployment"] == "blue" and live_after["alive"]
    assert score_one(live_after["scoring_uri"], prepared)["model_version"] == "1"
    green = json.loads((pipeline_home / "endpoints" / ENDPOINT / "green" / "deployment.json")
                       .read_text())  # fmt: skip
    assert (
        not Path(f"/proc/{green['pid']}").exists()
        or "Z" in Path(f"/proc/{green['pid']}/stat").read_text().rsplit(")", 1)[-1].split()[:1]
    )

    assert stop_all(pipeline_home) == [f"{ENDPOINT}/blue"]
    assert current(pipeline_home, ENDPOINT)["alive"] is False


def test_target_none_and_unpromoted_candidates_skip_deploy(tmp_path, prepared):
    registration = tmp_path / "registration"
    registration.mkdir()
    (registration / "summary.json").write_text(
        json.dumps({"model_name": "m", "model_version": "4", "promoted": True})
    )
    summary = deploy.deploy(registration, prepared, "none", "ep-1", tmp_path / "out")
    assert summary["skipped_reason"] == "deploy_target is none" and summary["scoring_uri"] is None
    assert read(tmp_path / "out") == summary
    args = ["--registration", str(registration), "--prepared", str(prepared),
            "--target", "k8s", "--endpoint-name", "e", "--out", str(tmp_path / "x")]  # fmt: skip
    assert deploy.main(args) == 2
