"""prep: good data becomes clean stratified splits; each kind of bad data fails with
exit code 2 and one `error:` line naming the file, the column and the value."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from steps import prep
from steps.sample_data import generate

from .conftest import prep_args


def frame(rows: int = 400, seed: int = 1) -> pd.DataFrame:
    return pd.DataFrame(generate(rows, seed=seed))


def run_prep(data, out, capsys, *extra, min_rows=100):
    code = prep.main(prep_args(data, out, *extra, min_rows=min_rows))
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    return code, (errors[-1] if errors else "")


def assert_fails(data, out, capsys, *fragments, extra=(), min_rows=100):
    code, message = run_prep(data, out, capsys, *extra, min_rows=min_rows)
    assert code == 2, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert not (out / "train.parquet").exists()
    return message


def test_good_data_becomes_stratified_splits_profile_and_config(prepared, small_data):
    summary = json.loads((prepared / "summary.json").read_text())
    assert summary["rows"] == 20000
    assert summary["train_rows"] + summary["valid_rows"] + summary["test_rows"] == 20000
    assert summary["features"] == 57 and summary["files"] == 3
    assert abs(summary["valid_rows"] - 3000) <= 2 and abs(summary["test_rows"] - 3000) <= 2
    rates = {
        split: pq.read_table(prepared / f"{split}.parquet", columns=["target"])
        .column("target").to_numpy().mean()
        for split in ("train", "valid", "test")
    }  # fmt: skip
    assert max(rates.values()) - min(rates.values()) < 0.005
    train = pq.read_table(prepared / "train.parquet").to_pandas()
    assert train["ps_reg_03"].dtype == np.float32
    assert train["ps_reg_03"].isna().mean() > 0.1  # the -1 marker became missing
    assert (train["ps_car_03_cat"].dropna() >= 0).all()
    profile = json.loads((prepared / "profile.json").read_text())
    reg03 = profile["features"]["ps_reg_03"]
    assert 0.1 < reg03["missing_rate"] < 0.3
    assert abs(sum(reg03["bins"]["shares"]) - 1) < 1e-9
    assert profile["features"]["ps_car_04_cat"]["top_values"][0]["value"] == 0
    dataset = json.loads((prepared / "dataset.json").read_text())
    assert dataset["types"]["ps_car_04_cat"] == "categorical"
    assert dataset["types"]["ps_ind_06_bin"] == "binary"


def test_raw_records_clean_back_to_the_prepared_rows(prepared):
    from steps.prepared import load_dataset, load_split_frame

    dataset = load_dataset(prepared)
    rows, _ = load_split_frame(prepared, "test", dataset, rows=200)
    records = dataset.to_records(rows)
    assert records[0]["ps_ind_02_cat"] == int(rows["ps_ind_02_cat"].iloc[0])
    again = dataset.clean(pd.DataFrame.from_records(records), source="records")
    pd.testing.assert_frame_equal(again, rows, check_exact=True)


def test_split_is_deterministic_for_a_seed(small_data, tmp_path, capsys):
    for name in ("a", "b"):
        assert run_prep(small_data, tmp_path / name, capsys)[0] == 0
    first = pq.read_table(tmp_path / "a" / "test.parquet").column("id").to_pylist()
    again = pq.read_table(tmp_path / "b" / "test.parquet").column("id").to_pylist()
    assert first == again


def test_reads_parquet_gzip_and_nested_parts_and_skips_markers(tmp_path, capsys):
    data = tmp_path / "data"
    (data / "day=2").mkdir(parents=True)
    whole = frame(600)
    whole.iloc[:200].to_parquet(data / "a.parquet")
    with gzip.open(data / "b.csv.gz", "wt") as handle:
        whole.iloc[200:400].to_csv(handle, index=False)
    whole.iloc[400:].to_csv(data / "day=2" / "c.csv", index=False)
    (data / "_SUCCESS").write_text("")
    (data / ".hidden.txt").write_text("ignore me")
    code, message = run_prep(data, tmp_path / "out", capsys)
    assert code == 0, message
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rows"] == 600 and summary["files"] == 3


def test_own_data_with_a_yaml_config_and_text_categories(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = 500
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame(
        {
            "customer": [f"c{i}" for i in range(rows)],
            "churned": rng.integers(0, 2, rows),
            "plan": rng.choice(["basic", "pro", "team"], rows),
            "tenure": rng.integers(0, 60, rows),
            "ignored": "x",
        }
    ).to_csv(data / "part.csv", index=False)
    config = tmp_path / "dataset.yaml"
    config.write_text(
        "id_column: customer\ntarget_column: churned\nfeatures: null\n"
        "column_types: {plan: categorical}\ndrop_columns: [ignored]\nmissing_marker: null\n"
    )
    code, message = run_prep(data, tmp_path / "out", capsys, "--dataset-config", str(config))
    assert code == 0, message
    dataset = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert dataset["features"] == ["plan", "tenure"]
    assert dataset["categories"] == {"plan": ["basic", "pro", "team"]}
    codes = pq.read_table(tmp_path / "out" / "train.parquet").column("plan").to_numpy()
    assert set(np.unique(codes)) <= {0.0, 1.0, 2.0}


def test_bad_dataset_config_names_the_field(tmp_path, capsys):
    config = tmp_path / "dataset.json"
    config.write_text(json.dumps({"target": "y"}))
    data = tmp_path / "data"
    data.mkdir()
    frame().to_csv(data / "p.csv", index=False)
    assert_fails(data, tmp_path / "out", capsys, "dataset.json", "target", "target_column",
                 extra=("--dataset-config", str(config)))  # fmt: skip


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "_SUCCESS").write_text("")
    assert_fails(tmp_path / "data", tmp_path / "out", capsys, "no data files", ".csv")


def test_a_file_that_is_not_data(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    frame().to_csv(data / "part-0.csv", index=False)
    (data / "notes.txt").write_text("remember the milk")
    assert_fails(data, tmp_path / "out", capsys, "notes.txt", "accepted", ".parquet")


def test_a_csv_that_is_binary_garbage(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "part-0.csv").write_bytes(bytes(range(256)) * 40)
    assert_fails(data, tmp_path / "out", capsys, "part-0.csv", "not a CSV")


def test_a_parquet_that_is_not_parquet(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "part-0.parquet").write_text("id,target\n1,0\n")
    assert_fails(data, tmp_path / "out", capsys, "part-0.parquet", "not a Parquet")


def test_missing_target_column(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    frame().drop(columns=["target"]).to_csv(data / "part-0.csv", index=False)
    assert_fails(data, tmp_path / "out", capsys, "part-0.csv", "target column 'target' is missing")


def test_non_binary_target(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    bad = frame()
    bad.loc[5, "target"] = 2
    bad.to_csv(data / "part-0.csv", index=False)
    assert_fails(data, tmp_path / "out", capsys, "part-0.csv", "must be 0 or 1", "found 2")


def test_single_class_target(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    bad = frame()
    bad["target"] = 0
    bad.to_csv(data / "part-0.csv", index=False)
    assert_fails(data, tmp_path / "out", capsys, "single class", "400 rows", "both 0 and 1")


def test_missing_feature_columns_are_named(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    frame().drop(columns=["ps_car_13", "ps_ind_01"]).to_csv(data / "part-0.csv", index=False)
    message = assert_fails(data, tmp_path / "out", capsys, "part-0.csv", "ps_car_13", "ps_ind_01")
    assert "2 of 57" in message


def test_wrong_type_names_column_file_and_value(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    bad = frame()
    bad["ps_reg_02"] = bad["ps_reg_02"].astype(object)
    bad.loc[7, "ps_reg_02"] = "high"
    frame(seed=2).assign(id=lambda f: f["id"] + 10_000).to_csv(data / "a.csv", index=False)
    bad.to_csv(data / "b.csv", index=False)
    assert_fails(data, tmp_path / "out", capsys, "'ps_reg_02'", "b.csv", "'high'", "numeric")


def test_binary_column_with_other_values(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    bad = frame()
    bad.loc[3, "ps_ind_16_bin"] = 7
    bad.to_csv(data / "part-0.csv", index=False)
    assert_fails(data, tmp_path / "out", capsys, "'ps_ind_16_bin'", "binary", "found 7")


def test_duplicate_ids_give_an_example_and_a_count(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    first = frame()
    first.to_csv(data / "a.csv", index=False)
    second = frame(seed=3)
    second["id"] += 10_000
    second.loc[:2, "id"] = first.loc[:2, "id"].to_numpy()
    second.to_csv(data / "b.csv", index=False)
    example = int(first.loc[0, "id"])
    assert_fails(data, tmp_path / "out", capsys, "3 id(s) occur more than once",
                 f"e.g. {example} (2 times, in a.csv, b.csv)")  # fmt: skip


def test_too_few_rows_says_how_many_and_the_minimum(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    frame(400).to_csv(data / "part-0.csv", index=False)
    assert_fails(data, tmp_path / "out", capsys, "too few rows: 400", "at least 1000",
                 min_rows=1000)  # fmt: skip


def test_parts_with_different_columns_name_both_files(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    frame().to_csv(data / "a.csv", index=False)
    frame(seed=4).assign(extra=1, id=lambda f: f["id"] + 10_000).to_csv(data / "b.csv", index=False)
    assert_fails(data, tmp_path / "out", capsys, "b.csv and a.csv have different columns", "extra")


def test_bad_split_parameter_names_flag_and_range(tmp_path, capsys, small_data):
    args = prep_args(small_data, tmp_path / "out")
    args[args.index("--valid-fraction") + 1] = "0.7"
    assert prep.main(args) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("error: --valid-fraction=0.7") and "< 0.5" in message


@pytest.mark.parametrize("flag", ["--min-rows"])
def test_cli_convention_in_a_real_process(tmp_path, flag):
    (tmp_path / "data").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "steps.prep", *prep_args(tmp_path / "data", tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]),
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --data ")
