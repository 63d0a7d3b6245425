"""Several training candidates in one run: the request contract, the train slots, the
winner's selection, and the local executor running the slots side by side."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from cli.pipeline_commands import format_run
from pipeline.definition import PIPELINE_YAML, load_pipeline
from pipeline.local_executor import LocalExecutor
from pipeline.request import TrainingRequest
from pipeline.run_store import RunStore
from steps.candidates import (
    MAX_CANDIDATES,
    format_overrides,
    parse_overrides,
    pick_best,
    thread_share,
)
from steps.select_best import select

FAKE_STEP = Path(__file__).resolve().parent / "fake_step.py"


def _errors(body: dict) -> list[tuple[tuple, str]]:
    with pytest.raises(ValidationError) as info:
        TrainingRequest.model_validate_json(json.dumps(body))
    return [(e["loc"], e["msg"]) for e in info.value.errors()]


# -- the request ---------------------------------------------------------------------


def test_a_request_without_candidates_trains_its_params_once():
    inputs = TrainingRequest().pipeline_inputs(data_uri="d", lineage={})
    assert inputs["candidate_count"] == 1
    # "none", never "": Azure ML cannot pass an empty string (steps._cli.UNSET).
    assert [inputs[f"candidate_{i}"] for i in range(MAX_CANDIDATES)] == ["none"] * 4


def test_candidates_become_one_overrides_string_per_slot():
    request = TrainingRequest.model_validate_json(
        json.dumps(
            {
                "params": {"num_boost_round": 300},
                "candidates": [{"num_leaves": 15}, {"num_leaves": 63, "learning_rate": 0.1}],
            }
        )
    )
    inputs = request.pipeline_inputs(data_uri="d", lineage={})
    assert inputs["candidate_count"] == 2
    assert inputs["candidate_0"] == "num_leaves=15"
    assert inputs["candidate_1"] == "learning_rate=0.1,num_leaves=63"
    assert inputs["candidate_2"] == inputs["candidate_3"] == "none"
    assert inputs["num_boost_round"] == 300  # shared by every candidate
    # The record keeps what the client asked for, and it reads back the same.
    dumped = request.model_dump(mode="json")
    assert dumped["candidates"] == [{"num_leaves": 15}, {"learning_rate": 0.1, "num_leaves": 63}]
    assert TrainingRequest.model_validate(dumped) == request


def test_bad_candidates_are_refused_naming_the_index_and_the_field():
    errors = _errors({"candidates": [{"num_leaves": 31}, {"num_leaves": 9000, "seed": "1"}]})
    assert errors[0][0] == ("candidates", 1, "num_leaves")
    assert "less than or equal to 4096" in errors[0][1]
    assert errors[1][0] == ("candidates", 1, "seed")
    (loc, msg), *_ = _errors({"candidates": [{"num_leafs": 3}]})
    assert loc == ("candidates", 0, "num_leafs") and "Extra inputs" in msg
    (loc, msg), *_ = _errors({"candidates": [{"num_leaves": n} for n in range(2, 7)]})
    assert loc == ("candidates",) and "at most 4" in msg


def test_the_http_api_answers_422_with_the_candidates_index_and_field():
    from triggers.validation import RequestError, validate_training_request

    with pytest.raises(RequestError) as info:
        validate_training_request({"candidates": [{"num_leaves": 31}, {"num_leaves": 9000}]})
    assert info.value.status == 422
    (detail,) = info.value.details
    assert detail["path"] == "candidates[1].num_leaves" and detail["value"] == 9000


def test_candidates_that_train_the_same_parameters_are_refused():
    # {} means "params as they are", which already has num_leaves 31.
    (loc, msg), *_ = _errors({"candidates": [{"learning_rate": 0.1}, {}, {"num_leaves": 31}]})
    assert loc == ("candidates",)
    assert "candidates[2] trains the same parameters as candidates[1]" in msg


def test_overrides_text_round_trips_and_bad_text_names_the_field():
    overrides = {"learning_rate": 0.1, "lambda_l2": 1e-05, "class_weight": "balanced"}
    text = format_overrides(overrides)
    assert text == "learning_rate=0.1,lambda_l2=1e-05,class_weight=balanced"
    assert not set(text) & set("'\"$` ;")  # safe inside Azure ML's bash command
    assert parse_overrides(text) == overrides
    assert parse_overrides("") == {}
    with pytest.raises(ValueError, match="num_leaves=5000.*less than or equal to 4096"):
        parse_overrides("num_leaves=5000")
    with pytest.raises(ValueError, match="unknown parameter 'leaves'; accepted: learning_rate"):
        parse_overrides("leaves=3")
    with pytest.raises(ValueError, match="num_leaves='x': expected an integer"):
        parse_overrides("num_leaves=x")
    with pytest.raises(ValueError, match="name=value pairs"):
        parse_overrides("num_leaves=3; rm -rf /")


def test_the_winner_is_the_best_validation_auc_and_unused_slots_never_win():
    assert pick_best([{"valid_auc": 0.61}, {"valid_auc": 0.64}, {"skipped": True}]) == 1
    assert pick_best([{"valid_auc": 0.6}, {"valid_auc": 0.6}]) == 0  # ties: lower slot
    assert pick_best([{"valid_auc": math.nan}, {"valid_auc": 0.5}]) == 1
    assert pick_best([{"skipped_reason": "no drift"}, {"skipped": True}]) is None


def test_thread_share_never_asks_for_more_threads_than_cores_allow():
    assert thread_share(1, 2) == 2
    assert thread_share(2, 2) == 1
    assert thread_share(3, 2) == 1  # at least one each
    assert thread_share(4, 16) == 4


def test_the_cli_takes_candidates_and_names_the_one_at_fault():
    from cli.pipeline_commands import ParamError, build_request

    request = build_request(
        ["num_boost_round=50"], deploy="none", experiment="x",
        candidates=["num_leaves=15", "num_leaves=63,learning_rate=0.1"],
    )  # fmt: skip
    assert request.candidate_inputs()["candidate_1"] == "learning_rate=0.1,num_leaves=63"
    assert request.params.num_boost_round == 50
    with pytest.raises(ParamError, match=r"--candidate #2 'num_leaves=1': .*greater than or equal"):
        build_request([], deploy="none", experiment="x", candidates=["seed=1", "num_leaves=1"])
    with pytest.raises(ParamError, match=r"--candidate: candidates\[1\] trains the same"):
        build_request([], deploy="none", experiment="x", candidates=["", "num_leaves=31"])
    with pytest.raises(ParamError, match="given 5 times; at most 4"):
        build_request([], deploy="none", experiment="x", candidates=[f"seed={i}" for i in range(5)])


# -- the steps -----------------------------------------------------------------------


def _train_argv(out: Path, *, slot: int, count: int, overrides: str = "") -> list[str]:
    definition = load_pipeline()
    inputs = definition.resolve_inputs({"training_data": "/data"})
    inputs.update(candidate_count=count, **{f"candidate_{slot}": overrides})
    node = "train" if slot == 0 else f"train_{slot}"
    outputs = {
        (n, o): out / n / o for n, nd in definition.nodes.items() for o in nd.component.outputs
    }
    return definition.argv(node, inputs, outputs)


def test_an_unused_train_slot_writes_skipped_and_trains_nothing(tmp_path):
    argv = _train_argv(tmp_path, slot=2, count=2)
    (tmp_path / "train_2" / "model").mkdir(parents=True)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "train_2" / "model" / "summary.json").read_text())
    assert summary["skipped"] is True and summary["candidate"] == {"slot": 2}
    assert "slot 2 unused (2 candidate(s))" in done.stderr


def test_a_bad_overrides_string_fails_the_slot_with_one_error_line(tmp_path):
    argv = _train_argv(tmp_path, slot=1, count=2, overrides="num_leaves=1")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: --overrides: overrides: num_leaves=1: Input should be greater than or equal to 2"
    )


def _slot_output(folder: Path, summary: dict) -> Path:
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "MLmodel").write_text(f"slot {summary.get('candidate', {}).get('slot')}")
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_select_best_passes_on_the_winners_whole_output_with_every_candidates_figures(tmp_path):
    slots = [
        _slot_output(tmp_path / "s0", {"valid_auc": 0.62, "mlflow_run_id": "r0",
                                       "candidate": {"slot": 0, "overrides": {"num_leaves": 15}}}),
        _slot_output(tmp_path / "s1", {"valid_auc": 0.64, "mlflow_run_id": "r1",
                                       "candidate": {"slot": 1, "overrides": {"num_leaves": 63}}}),
        _slot_output(tmp_path / "s2", {"skipped": True, "candidate": {"slot": 2}}),
        _slot_output(tmp_path / "s3", {"skipped": True, "candidate": {"slot": 3}}),
    ]  # fmt: skip
    summary = select(slots, tmp_path / "out")
    assert (tmp_path / "out" / "model" / "MLmodel").read_text() == "slot 1"
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written == summary
    assert written["mlflow_run_id"] == "r1"  # register and evaluate read the winner
    assert written["selection"]["winner"] == 1
    figures = [
        (c["slot"], c["valid_auc"], c["overrides"]) for c in written["selection"]["candidates"]
    ]
    assert figures == [(0, 0.62, {"num_leaves": 15}), (1, 0.64, {"num_leaves": 63})]


def test_select_best_passes_slot_0_through_when_nothing_was_trained(tmp_path):
    skipped = {"mlflow_run_id": None, "model_uri": None, "skipped_reason": "no drift"}
    slots = [_slot_output(tmp_path / "s0", skipped)] + [
        _slot_output(tmp_path / f"s{i}", {"skipped": True}) for i in (1, 2, 3)
    ]
    summary = select(slots, tmp_path / "out")
    assert summary["skipped_reason"] == "no drift"
    assert summary["selection"] == {"metric": "valid_auc", "winner": None, "candidates": []}


# -- the pipeline and the local executor ---------------------------------------------


def test_the_real_pipeline_gives_every_slot_its_own_candidate():
    doc = yaml.safe_load(PIPELINE_YAML.read_text())
    slots = ["train", "train_1", "train_2", "train_3"]
    assert len(slots) == MAX_CANDIDATES
    for index, node in enumerate(slots):
        job = doc["jobs"][node]
        assert job["component"] == "./components/train.yaml"
        assert job["inputs"]["slot"] == index
        assert job["inputs"]["overrides"] == f"${{{{parent.inputs.candidate_{index}}}}}"
    select_inputs = doc["jobs"]["select_best"]["inputs"]
    assert select_inputs == {
        f"model_{i}": f"${{{{parent.jobs.{node}.outputs.model}}}}" for i, node in enumerate(slots)
    }


def _sweep_pipeline(folder: Path, marker_dir: Path, aucs: list[float]) -> Path:
    """prep -> 4 fake train slots -> the REAL select_best component -> a fake evaluate
    that records which model folder it was given. Slot i touches its marker and waits
    for slot i+1's (the last for slot 0's): a cycle only concurrent slots complete."""
    folder.mkdir(parents=True)
    real = yaml.safe_load(PIPELINE_YAML.read_text())

    def fake(name: str, inputs: dict, args: str) -> str:
        component = {
            "type": "command",
            "name": f"fake_{name}",
            "inputs": {k: {"type": "uri_folder"} for k in inputs},
            "outputs": {"out": {"type": "uri_folder"}},
            "command": f"python {FAKE_STEP} --name {name} --out ${{{{outputs.out}}}} {args}",
        }
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(component))
        return f"./{name}.yaml"

    jobs: dict = {"prep": {"type": "command", "component": fake("prep", {}, ""), "inputs": {}}}
    slots = ["train", "train_1", "train_2", "train_3"]
    for i, node in enumerate(slots):
        mine, theirs = marker_dir / f"{i}", marker_dir / f"{(i + 1) % len(slots)}"
        summary = json.dumps({"valid_auc": aucs[i], "candidate": {"slot": i}}).replace('"', '\\"')
        args = (
            f"--after ${{{{inputs.prepared}}}} --touch {mine} --wait-for {theirs} "
            f'--summary "{summary}"'
        )
        jobs[node] = {
            "type": "command",
            "component": fake(node, {"prepared": 1}, args),
            "inputs": {"prepared": "${{parent.jobs.prep.outputs.out}}"},
        }
    # The real component: select_best.yaml from the repo, bound like the real pipeline.
    bindings = {f"model_{i}": f"${{{{parent.jobs.{n}.outputs.out}}}}" for i, n in enumerate(slots)}
    jobs["select_best"] = {
        "type": "command",
        "component": str(PIPELINE_YAML.parent / "components" / "select_best.yaml"),
        "inputs": bindings,
    }
    jobs["evaluate"] = {
        "type": "command",
        "component": fake("evaluate", {"model": 1}, "--echo ${{inputs.model}}"),
        "inputs": {"model": "${{parent.jobs.select_best.outputs.model}}"},
    }
    path = folder / "pipeline.yaml"
    pipeline = {"type": "pipeline", "name": "sweep_test", "inputs": real["inputs"], "jobs": jobs}
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))
    return path


def test_local_executor_trains_the_slots_side_by_side_and_the_gate_sees_only_the_best(
    home, tmp_path
):
    markers = tmp_path / "markers"
    markers.mkdir()
    path = _sweep_pipeline(tmp_path / "p", markers, [0.61, 0.66, 0.64, 0.59])
    definition = load_pipeline(path)
    assert definition.nodes["select_best"].component.name == "aml_trigger_select_best"
    store = RunStore(home)
    store.create_run(
        "run-sweep", trigger="test", idempotency_key=None, request=None, inputs={}, job={},
        steps=definition.order(), status="running",
    )  # fmt: skip
    record = LocalExecutor(definition, store).execute("run-sweep", {"training_data": str(tmp_path)})

    assert record.status == "completed", record.error  # the wait cycle closed: all 4 at once
    evaluate = store.output_dir("run-sweep", "evaluate", "out") / "summary.json"
    (given,) = json.loads(evaluate.read_text())["echo"]
    assert Path(given) == store.output_dir("run-sweep", "select_best", "model")
    seen = json.loads((Path(given) / "summary.json").read_text())
    assert seen["valid_auc"] == 0.66 and seen["candidate"]["slot"] == 1
    sweep = record.extra["sweep"]
    assert sweep["winner"] == 1
    assert [c["valid_auc"] for c in sweep["candidates"]] == [0.61, 0.66, 0.64, 0.59]
    shown = format_run(record)
    assert "candidates (valid_auc, the best goes to the gate):" in shown
    assert "  * slot 1  0.6600  (params)" in shown and "    slot 0  0.6100" in shown


@pytest.mark.slow
def test_two_candidates_end_to_end_the_better_one_is_evaluated_and_registered(home, tmp_path):
    from pipeline.local_submitter import LocalSubmitter
    from pipeline.settings import Settings
    from steps.sample_data import write_sample_data

    data = tmp_path / "data"
    write_sample_data(data, rows=8_000, seed=3, parts=2)
    request = TrainingRequest.model_validate_json(
        json.dumps(
            {
                "params": {"num_boost_round": 30},
                "candidates": [{"num_leaves": 4, "learning_rate": 0.02}, {"num_leaves": 31}],
                "split": {"min_rows": 1000},
                "gate": {"gate_min_score": 0.5},
                "deploy_target": "none",
            }
        )
    )
    record = LocalSubmitter(Settings.from_env()).run_foreground(
        request, run_id="run-two", data_dir=data
    )
    assert record.status == "completed", record.error
    steps = {s.name: s.status for s in record.steps}
    assert all(steps[n] == "completed" for n in ("train", "train_1", "select_best", "evaluate"))
    sweep = record.extra["sweep"]
    by_slot = {c["slot"]: c for c in sweep["candidates"]}
    assert set(by_slot) == {0, 1}
    # Both train at once on this machine, so each gets its share of the cores.
    threads = thread_share(2, os.cpu_count() or 1)
    assert by_slot[0]["overrides"] == {
        "num_leaves": 4,
        "learning_rate": 0.02,
        "num_threads": threads,
    }
    assert by_slot[1]["overrides"] == {"num_leaves": 31, "num_threads": threads}
    best = max(by_slot, key=lambda s: by_slot[s]["valid_auc"])
    assert sweep["winner"] == best
    # The registered version is the winner's MLflow run.
    import mlflow

    from steps.tracking import configure_registry

    configure_registry()
    version = mlflow.MlflowClient().get_model_version(request.model_name, record.model_version)
    assert version.run_id == by_slot[best]["mlflow_run_id"]
