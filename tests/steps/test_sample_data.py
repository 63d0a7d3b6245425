"""The generator: Porto Seguro shape, realistic rates, real but weak signal, deterministic."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from steps import sample_data
from steps.dataset import PORTO_FEATURES
from steps.sample_data import generate, write_sample_data


def test_has_the_porto_seguro_columns_and_types():
    columns = generate(2000, seed=1)
    assert list(columns) == ["id", "target", *PORTO_FEATURES]
    assert len(PORTO_FEATURES) == 57
    for name in PORTO_FEATURES:
        values = columns[name]
        if name.endswith("_bin"):
            assert set(np.unique(values)) <= {0, 1}, name
        if name.endswith("_cat"):
            assert np.issubdtype(values.dtype, np.integer), name
    assert len(np.unique(columns["id"])) == 2000


def test_positive_rate_and_missing_rates_are_realistic():
    columns = generate(200_000, seed=3)
    assert 0.032 < columns["target"].mean() < 0.041
    assert 0.16 < np.mean(columns["ps_reg_03"] == -1) < 0.20
    assert 0.66 < np.mean(columns["ps_car_03_cat"] == -1) < 0.72
    assert 0.42 < np.mean(columns["ps_car_05_cat"] == -1) < 0.48
    assert np.mean(columns["ps_car_13"] == -1) == 0.0


def test_signal_lives_in_ind_reg_car_and_calc_is_noise():
    columns = generate(200_000, seed=5)
    target = columns["target"]
    assert roc_auc_score(target, columns["ps_car_13"]) > 0.58
    assert roc_auc_score(target, -columns["ps_ind_15"]) > 0.53
    for i in range(1, 15):
        auc = roc_auc_score(target, columns[f"ps_calc_{i:02d}"])
        assert abs(auc - 0.5) < 0.01, f"ps_calc_{i:02d} carries signal (AUC {auc:.3f})"


def test_same_seed_same_files_other_seed_other_data(tmp_path):
    first = write_sample_data(tmp_path / "a", rows=3000, seed=9, parts=3)
    again = write_sample_data(tmp_path / "b", rows=3000, seed=9, parts=3)
    other = write_sample_data(tmp_path / "c", rows=3000, seed=10, parts=3)
    assert [p.name for p in first] == ["part-00000.csv", "part-00001.csv", "part-00002.csv"]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    assert first[0].read_bytes() != other[0].read_bytes()
    frame = pd.concat(pd.read_csv(p) for p in first)
    assert len(frame) == 3000 and frame["id"].is_unique


def test_drift_shifts_feature_distributions():
    calm = generate(50_000, seed=2)
    drifted = generate(50_000, seed=2, drift=1.0)
    assert drifted["ps_car_13"].mean() > calm["ps_car_13"].mean() * 1.05
    assert np.mean(drifted["ps_reg_03"] == -1) > np.mean(calm["ps_reg_03"] == -1) * 1.5


def test_cli_writes_parts_and_rejects_bad_values(tmp_path, capsys):
    assert (
        sample_data.main(["--rows", "500", "--seed", "1", "--out", str(tmp_path), "--parts", "2"])
        == 0
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-00000.csv", "part-00001.csv"]
    assert sample_data.main(["--rows", "0", "--seed", "1", "--out", str(tmp_path)]) == 2
    assert "error: --rows=0" in capsys.readouterr().err
