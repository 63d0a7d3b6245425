"""batch_score: every row scored by the champion (or a pinned version), in chunks,
validated like prep; a bad file leaves no partial predictions behind."""

from __future__ import annotations

import json
import shutil

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from steps import batch_score
from steps.champion import current_champion
from steps.dataset import ResolvedDataset
from steps.register import register
from tests.steps.conftest import mlflow_env, use_env

pytestmark = pytest.mark.slow  # needs the trained model fixture

PROMOTE = {"decision": "promote", "champion_version": None, "metrics": {}, "reasons": ["ok"]}
LINEAGE = {"data_location": "d/", "trigger": "test", "run_key": "k", "code_version": "t"}


@pytest.fixture
def registry(session_home, monkeypatch, trained):
    """Two versions of `batch-model`; v2 is the champion."""
    use_env(monkeypatch, mlflow_env(session_home))
    from steps.tracking import configure_registry

    configure_registry()
    client = mlflow.MlflowClient()
    train_summary = json.loads((trained / "summary.json").read_text())
    name = "batch-model"
    if not client.search_model_versions(f"name='{name}'"):
        first = register(client, model_name=name, train=train_summary, evaluation=PROMOTE,
                         lineage=LINEAGE)  # fmt: skip
        register(client, model_name=name, train=train_summary,
                 evaluation={**PROMOTE, "champion_version": first["model_version"]},
                 lineage=LINEAGE)  # fmt: skip
    return client, name


@pytest.fixture
def new_rows(small_data, tmp_path):
    """The sample drop as new rows: a CSV, a gzip CSV and a Parquet part, no target."""
    folder = tmp_path / "new"
    folder.mkdir()
    parts = sorted(small_data.glob("*.csv"))
    frames = [pd.read_csv(p).drop(columns=["target"]) for p in parts]
    frames[0].to_csv(folder / "a.csv", index=False)
    frames[1].to_csv(folder / "b.csv.gz", index=False)
    frames[2].to_parquet(folder / "c.parquet", index=False)
    return folder, pd.concat(frames, ignore_index=True)


def _predictions(out) -> pd.DataFrame:
    return pd.concat(
        [pd.read_parquet(p) for p in sorted(out.glob("part-*.parquet"))], ignore_index=True
    )


def test_the_champion_scores_every_row_as_one_whole_frame_predict_would(
    registry, new_rows, tmp_path
):
    client, name = registry
    folder, whole = new_rows
    out = tmp_path / "out"
    code = batch_score.main(
        ["--data", str(folder), "--model-name", name, "--chunk-rows", "1000", "--out", str(out)]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    champion = current_champion(client, name)
    assert summary["model_version"] == str(champion) == "2"
    assert summary["rows"] == len(whole)
    assert [p["file"] for p in summary["parts"]] == ["a.csv", "b.csv.gz", "c.parquet"]
    got = _predictions(out)
    assert list(got.columns) == ["id", "probability", "model_version"]
    assert got["id"].tolist() == whole["id"].tolist()
    assert set(got["model_version"]) == {"2"}
    # The baseline: the model predicting the whole cleaned frame at once.
    model = mlflow.pyfunc.load_model(f"models:/{name}/2")
    dataset = ResolvedDataset(**model.metadata.metadata["aml_trigger_dataset"])
    expected = np.asarray(model.predict(dataset.clean(whole, source="all")), dtype="float64")
    np.testing.assert_allclose(got["probability"].to_numpy(), expected, rtol=1e-9)
    assert pq.ParquetFile(out / "part-00000.parquet").metadata.num_row_groups > 1  # chunked


def test_a_pinned_version_is_used_and_an_unknown_one_is_named(registry, new_rows, tmp_path, capsys):
    _, name = registry
    folder, _ = new_rows
    out = tmp_path / "out"
    args = ["--data", str(folder), "--model-name", name, "--out", str(out)]
    assert batch_score.main([*args, "--model-version", "1"]) == 0
    assert set(_predictions(out)["model_version"]) == {"1"}
    assert batch_score.main([*args, "--model-version", "99"]) == 2
    assert f"model {name!r} has no version 99" in capsys.readouterr().err


def test_no_champion_yet_says_what_to_do(registry, new_rows, tmp_path, capsys):
    folder, _ = new_rows
    out = tmp_path / "out"
    code = batch_score.main(["--data", str(folder), "--model-name", "never-trained", "--out",
                             str(out)])  # fmt: skip
    assert code == 2
    assert "has no champion yet" in capsys.readouterr().err


def test_a_bad_value_in_a_late_chunk_fails_naming_file_and_column_and_writes_nothing(
    registry, new_rows, tmp_path, capsys
):
    _, name = registry
    folder, _ = new_rows
    frame = pd.read_parquet(folder / "c.parquet")
    frame["ps_ind_06_bin"] = frame["ps_ind_06_bin"].astype("int64")
    frame.loc[len(frame) - 3, "ps_ind_06_bin"] = 7
    frame.to_parquet(folder / "c.parquet", index=False)
    out = tmp_path / "out"
    code = batch_score.main(["--data", str(folder), "--model-name", name, "--chunk-rows",
                             "500", "--out", str(out)])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "column 'ps_ind_06_bin' in c.parquet is binary" in err and "found 7" in err
    assert list(out.iterdir()) == []  # a.csv and b.csv.gz were scored, but nothing is kept


def test_duplicate_ids_across_files_are_refused(registry, new_rows, tmp_path, capsys):
    _, name = registry
    folder, _ = new_rows
    shutil.copy(folder / "a.csv", folder / "again.csv")
    out = tmp_path / "out"
    assert batch_score.main(["--data", str(folder), "--model-name", name, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "duplicate ids in column 'id'" in err and "a.csv, again.csv" in err
    assert not list(out.glob("part-*"))


def test_unreadable_parts_and_missing_columns_are_named(registry, new_rows, tmp_path, capsys):
    _, name = registry
    folder, _ = new_rows
    out = tmp_path / "out"
    args = ["--data", str(folder), "--model-name", name, "--out", str(out)]
    (folder / "d.parquet").write_text("id,ps_ind_01\n1,2\n")
    assert batch_score.main(args) == 2
    assert "d.parquet: not a Parquet file (no PAR1 header)" in capsys.readouterr().err
    (folder / "d.parquet").unlink()
    pd.read_csv(folder / "a.csv").drop(columns=["ps_car_13"]).to_csv(folder / "a.csv", index=False)
    assert batch_score.main(args) == 2
    assert "a.csv: missing feature column(s) ps_car_13" in capsys.readouterr().err


def test_cli_writes_next_to_the_data_and_scoring_again_ignores_its_own_output(
    registry, new_rows, session_home, monkeypatch, capsys
):
    from cli.main import main

    _, name = registry
    folder, whole = new_rows
    monkeypatch.setenv("AML_TRIGGER_HOME", str(session_home))
    for _ in range(2):  # the second run must not read _predictions/ as new rows
        assert main(["score", "--data", str(folder), "--model-name", name]) == 0
        assert f"scored {len(whole):,} rows in 3 file(s) with {name} v2" in capsys.readouterr().out
    assert len(_predictions(folder / "_predictions")) == len(whole)
    assert main(["score", "--data", str(folder), "--compute", "cpu"]) == 2
    assert "--compute and --component-version need --azure" in capsys.readouterr().err
