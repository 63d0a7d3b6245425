"""train: validated parameters, LightGBM with early stopping, MLflow run and model."""

from __future__ import annotations

import json

import mlflow
import pytest
import yaml

from steps import train
from steps.params import TrainParams
from steps.train import DATASET_METADATA_KEY, lightgbm_params

from .conftest import mlflow_env, train_args, use_env


def test_balanced_class_weight_scales_positives_by_the_class_ratio():
    balanced = lightgbm_params(TrainParams(class_weight="balanced"), positives=10, negatives=90)
    assert balanced["scale_pos_weight"] == 9.0
    plain = lightgbm_params(TrainParams(), positives=10, negatives=90)
    assert "scale_pos_weight" not in plain
    assert plain["objective"] == "binary" and plain["seed"] == 42
    assert lightgbm_params(TrainParams(bagging_fraction=1.0), 1, 1)["bagging_freq"] == 0


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("num_leaves", "1", ">= 2"),
        ("learning_rate", "0", "> 0.0"),
        ("class_weight", "heavy", "balanced"),
        ("num_boost_round", "ten", "invalid int value"),
    ],
)
def test_a_bad_parameter_names_the_flag_and_the_accepted_range(
    flag, value, expected, prepared, tmp_path, capsys
):
    code = train.main(train_args(prepared, tmp_path / "out", **{flag: value}))
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "--" + flag.replace("_", "-") in err
    assert expected in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_trains_logs_to_mlflow_and_saves_a_loadable_model(trained, prepared, session_home):
    summary = json.loads((trained / "summary.json").read_text())
    assert {"mlflow_run_id", "best_iteration", "valid_auc", "train_seconds"} <= set(summary)
    assert 1 <= summary["best_iteration"] <= 60
    assert 0.55 < summary["valid_auc"] < 0.9
    mlmodel = yaml.safe_load((trained / "model" / "MLmodel").read_text())
    assert "lightgbm" in mlmodel["flavors"] and mlmodel["signature"]["inputs"]
    assert mlmodel["metadata"][DATASET_METADATA_KEY]["features"][0] == "ps_ind_01"

    env = mlflow_env(session_home)
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    run = client.get_run(summary["mlflow_run_id"])
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == env["MLFLOW_EXPERIMENT_NAME"]
    assert run.data.params["num_leaves"] == "15"
    assert run.data.metrics["valid_auc"] == pytest.approx(summary["valid_auc"])
    # sqlite store: artifacts beside the database, not ./mlruns of whatever cwd the step had
    assert experiment.artifact_location == (session_home / "mlflow" / "artifacts").as_uri()
    train_cwds = list(session_home.parent.parent.glob("train-cwd*/*"))
    assert train_cwds == []
    # Logged once, as the run's `model` artifacts (no logged-model entity).
    assert summary["model_uri"] == f"runs:/{summary['mlflow_run_id']}/model"
    from steps.champion import artifact_uri

    model = mlflow.pyfunc.load_model(artifact_uri(client, summary["model_uri"]))
    assert model.metadata.get_input_schema().input_names()[:2] == ["ps_ind_01", "ps_ind_02_cat"]


@pytest.mark.slow
def test_training_is_deterministic_for_a_seed(prepared, trained, tmp_path, monkeypatch):
    use_env(monkeypatch, mlflow_env(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    from steps.train import fit

    params = TrainParams(num_leaves=15, num_boost_round=60, early_stopping_rounds=10,
                         min_data_in_leaf=50, learning_rate=0.1, seed=7, num_threads=2)  # fmt: skip
    first = fit(prepared, params)
    second = fit(prepared, params)
    assert first[2] == second[2]  # identical validation AUC curves
    summary = json.loads((trained / "summary.json").read_text())
    assert first[0].best_iteration == summary["best_iteration"]
