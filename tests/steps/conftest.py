"""Fixtures for the step tests: small generated data, a prepared folder, a trained model.

The expensive ones (prep, train) are built once per session in a temporary home;
tests that change the registry or the endpoints use their own `home`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from steps import prep, train
from steps.sample_data import write_sample_data

SMALL_ROWS = 20000


def mlflow_env(home: Path, experiment: str = "steps-tests") -> dict[str, str]:
    """The environment the local executor gives every step process."""
    uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    return {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_REGISTRY_URI": uri,
        "MLFLOW_EXPERIMENT_NAME": experiment,
        "AML_TRIGGER_HOME": str(home),
    }


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def prep_args(data: Path, out: Path, *extra: str, min_rows: int = 100) -> list[str]:
    return [
        "--data", str(data), "--valid-fraction", "0.15", "--test-fraction", "0.15",
        "--min-rows", str(min_rows), "--seed", "7", "--out", str(out), *extra,
    ]  # fmt: skip


def train_args(prepared: Path, out: Path, **overrides: str) -> list[str]:
    values = {
        "learning_rate": "0.1", "num_leaves": "15", "num_boost_round": "60",
        "early_stopping_rounds": "10", "min_data_in_leaf": "50", "feature_fraction": "0.8",
        "bagging_fraction": "0.8", "lambda_l2": "1.0", "class_weight": "none", "seed": "7",
        "num_threads": "2",
    }  # fmt: skip
    values.update(overrides)
    args = ["--prepared", str(prepared), "--out", str(out)]
    for name, value in values.items():
        args += ["--" + name.replace("_", "-"), value]
    return args


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data") / "drop"
    write_sample_data(folder, rows=SMALL_ROWS, seed=11, parts=3)
    return folder


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, small_data) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    assert prep.main(prep_args(small_data, out)) == 0
    return out


@pytest.fixture(scope="session")
def session_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("session-home")


@pytest.fixture(scope="session")
def trained(tmp_path_factory, prepared, session_home) -> Path:
    """A train output folder (model + summary) logged to the session home's MLflow."""
    out = tmp_path_factory.mktemp("trained")
    cwd = tmp_path_factory.mktemp("train-cwd")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)  # test_train checks nothing lands in the working directory
        use_env(patch, mlflow_env(session_home))
        assert train.main(train_args(prepared, out)) == 0
    return out


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@pytest.fixture
def clean_cwd(tmp_path, monkeypatch) -> Path:
    """Run in an empty directory, to see whether anything is written where we stand."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def env_without_mlflow() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
