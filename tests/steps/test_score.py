"""score.py, the entry script: the same cleaning as prep, and 400s for bad input."""

from __future__ import annotations

import json
import shutil

import pytest

from steps import score
from steps.smoke_test import sample_rows

pytestmark = pytest.mark.slow  # needs the trained model fixture


@pytest.fixture
def entry(trained, tmp_path, monkeypatch):
    model_dir = tmp_path / "azureml-models" / "porto" / "7"
    shutil.copytree(trained / "model", model_dir / "model")  # Azure nests one level down
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(model_dir))
    monkeypatch.delenv("AML_TRIGGER_MODEL_VERSION", raising=False)
    score.init()
    return score


def body(response):
    return json.loads(response.get_data(as_text=True))


def test_scores_raw_records_like_the_training_data(entry, prepared):
    rows = sample_rows(prepared, 20)
    assert any(value == -1 for row in rows for value in row.values())  # raw missing markers
    answer = entry.run(json.dumps({"data": rows}))
    assert answer["model_version"] == "7"
    assert len(answer["probabilities"]) == 20
    assert all(0.0 <= p <= 1.0 for p in answer["probabilities"])


def test_missing_markers_and_nulls_mean_the_same(entry, prepared):
    row = sample_rows(prepared, 1)[0]
    with_marker = dict(row, ps_reg_03=-1)
    with_null = dict(row, ps_reg_03=None)
    first = entry.run(json.dumps({"data": [with_marker]}))["probabilities"]
    second = entry.run(json.dumps({"data": [with_null]}))["probabilities"]
    assert first == second


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("not json", "body is not JSON"),
        (json.dumps([1, 2]), 'an object with a "data" list'),
        (json.dumps({"data": []}), '"data" is empty'),
        (json.dumps({"data": [1]}), "record 0 is a int"),
        (json.dumps({"data": [{"ps_ind_01": 1}]}), "missing feature column(s) ps_ind_02_cat"),
    ],
)
def test_bad_input_is_a_400_naming_the_problem(entry, raw, fragment):
    response = entry.run(raw)
    assert response.status_code == 400
    assert fragment in body(response)["error"]


def test_wrong_types_and_too_many_rows_are_400s(entry, prepared):
    row = sample_rows(prepared, 1)[0]
    response = entry.run(json.dumps({"data": [dict(row, ps_car_13="fast")]}))
    assert response.status_code == 400
    assert "'ps_car_13'" in body(response)["error"] and "'fast'" in body(response)["error"]
    response = entry.run(json.dumps({"data": [row] * (score.MAX_ROWS + 1)}))
    assert response.status_code == 400 and "at most 10000" in body(response)["error"]
