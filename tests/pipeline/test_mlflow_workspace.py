"""The whole pipeline, twice, against MLflow as an Azure ML workspace answers it: a
real `mlflow server` behind a proxy that refuses what the workspace lacks (aliases,
logged models, model rename and delete; see conftest.py). The second run is judged
against the first one's champion; neither makes a call the workspace would refuse.
The steps run in the development virtualenv, and in the Azure ML step environment
built from pipeline/environment/conda.yaml (mlflow-skinny + azureml-mlflow)."""

from __future__ import annotations

import json

import mlflow
import pytest

from cli.main import main
from pipeline.local_executor import STEP_PYTHON_VARIABLE

pytestmark = pytest.mark.slow

RUN_PARAMS = ("num_boost_round=20", "min_rows=1000", "gate_min_score=0.5", "num_threads=1")


def run_pipeline(data, capsys) -> dict:
    args = ["run", "--data", str(data), "--deploy", "none"]
    for param in RUN_PARAMS:
        args += ["--param", param]
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    assert main(["runs", "--json", "--limit", "1"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["status"] == "completed", record.get("error")
    return record


def test_the_proxy_refuses_what_a_workspace_lacks(workspace_mlflow):
    client = mlflow.MlflowClient(workspace_mlflow.uri, registry_uri=workspace_mlflow.uri)
    client.create_registered_model("probe")
    for call in (
        lambda: client.set_registered_model_alias("probe", "champion", "1"),
        lambda: client.get_model_version_by_alias("probe", "champion"),
        lambda: client.rename_registered_model("probe", "other"),
        lambda: client.delete_registered_model("probe"),
        lambda: client.search_logged_models(experiment_ids=["0"]),
    ):
        with pytest.raises(mlflow.exceptions.MlflowException) as refused:
            call()
        assert refused.value.error_code == "ENDPOINT_NOT_FOUND"
    assert len(workspace_mlflow.refused) == 5
    assert [m.name for m in client.search_registered_models()] == ["probe"]


@pytest.mark.parametrize("steps_in", ["dev-virtualenv", "step-environment"])
def test_two_runs_track_register_and_promote_only_through_supported_calls(
    steps_in, workspace_mlflow, home, tmp_path, capsys, monkeypatch, request
):
    if steps_in == "step-environment":
        monkeypatch.setenv(STEP_PYTHON_VARIABLE, request.getfixturevalue("step_python"))
    from steps.champion import PROMOTION_TAG, current_champion
    from steps.sample_data import write_sample_data

    data = tmp_path / "data"
    write_sample_data(data, rows=6_000, seed=7, parts=2)
    first = run_pipeline(data, capsys)
    assert first["gate"]["decision"] == "promote" and first["model_version"] == "1"
    if steps_in == "step-environment":
        log = next((home / "runs").glob("*/logs/train.log")).read_text()
        assert log.startswith(f"$ {request.getfixturevalue('step_python')} -m steps.train")
    second = run_pipeline(data, capsys)
    assert second["model_version"] == "2"
    # Judged against the first run's champion, found through the registry's tags.
    assert second["extra"]["drift"]["champion_version"] == "1"
    assert any("champion" in reason for reason in second["gate"]["reasons"]), second["gate"]

    assert workspace_mlflow.refused == []
    assert workspace_mlflow.forwarded > 0
    # Everything landed on the server, nothing in the embedded SQLite store.
    assert not (home / "mlflow" / "mlflow.db").exists()
    client = mlflow.MlflowClient(workspace_mlflow.uri, registry_uri=workspace_mlflow.uri)
    versions = client.search_model_versions("name='porto-seguro-lgbm'")
    assert sorted(v.version for v in versions) == ["1", "2"]
    assert client.get_model_version("porto-seguro-lgbm", "1").tags[PROMOTION_TAG] == "1"
    expected = "2" if second["gate"]["decision"] == "promote" else "1"
    assert current_champion(client, "porto-seguro-lgbm") == expected
