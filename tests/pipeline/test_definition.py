"""The Azure ML YAML is the one pipeline definition: Azure ML's own loader accepts it,
its inputs are the request contract, and the local resolution matches Azure ML's."""

from __future__ import annotations

import shlex
import sys
import urllib.parse
from pathlib import Path

import pytest
import yaml

from pipeline.definition import (
    PIPELINE_YAML,
    DefinitionError,
    load_pipeline,
    resolve_command,
)
from pipeline.request import TrainingRequest
from steps.params import GateKpis, RetrainPolicy, SplitParams, TrainParams

COMPONENTS = sorted((PIPELINE_YAML.parent / "components").glob("*.yaml"))
TRAIN_SLOTS = ["train", "train_1", "train_2", "train_3"]
NODES = [
    "prep", "check_drift", *TRAIN_SLOTS, "score_champion", "select_best",
    "evaluate", "register", "deploy", "smoke_test",
]  # fmt: skip


def test_every_yaml_file_loads_with_the_azure_ml_sdk():
    from azure.ai.ml import load_component

    names = {}
    for path in [*COMPONENTS, PIPELINE_YAML]:
        component = load_component(source=path)
        names[path.stem] = component.name
    assert names["training_pipeline"] == "aml_trigger_training"
    steps = [n for n in NODES if n not in TRAIN_SLOTS[1:]]
    assert {names[n] for n in steps} == {f"aml_trigger_{n}" for n in steps}
    pipeline = load_component(source=PIPELINE_YAML)
    assert list(pipeline.jobs) == NODES


def _bounds(field) -> tuple:
    low = high = None
    for meta in field.metadata:
        low = getattr(meta, "ge", None) if getattr(meta, "ge", None) is not None else low
        low = getattr(meta, "gt", None) if getattr(meta, "gt", None) is not None else low
        high = getattr(meta, "le", None) if getattr(meta, "le", None) is not None else high
        high = getattr(meta, "lt", None) if getattr(meta, "lt", None) is not None else high
    return low, high


def test_pipeline_inputs_match_the_parameter_models_and_the_request_contract():
    from azure.ai.ml import load_component

    inputs = load_component(source=PIPELINE_YAML).inputs
    request_keys = TrainingRequest().pipeline_inputs(data_uri="x", lineage={}).keys()
    # The step computes are filled by the Azure ML submitter (pipeline/compute.py).
    submitter_filled = {"dataset_config", "prep_compute", "train_compute"}
    assert set(inputs) == set(request_keys) | submitter_filled
    for name in submitter_filled:
        assert inputs[name].optional is True
    assert inputs["training_data"].type == "uri_folder"
    for model in (TrainParams, SplitParams, GateKpis, RetrainPolicy):
        for name, field in model.model_fields.items():
            spec = inputs[name]
            assert spec.default == field.default, name
            low, high = _bounds(field)
            # Azure ML bounds are inclusive; exclusive ones (gt/lt) are enforced by the steps.
            assert (spec.min if spec.type != "string" else None) == low, name
            assert (spec.max if spec.type != "string" else None) == high, name
            if spec.type == "string":
                assert tuple(spec.enum) == field.annotation.__args__, name
            else:
                expected = "integer" if field.annotation is int else "number"
                assert spec.type == expected, name
    request = TrainingRequest()
    assert inputs["model_name"].default == request.model_name
    # A request leaves these to the settings (Settings.deployment_defaults), and every
    # submission binds them; the component's own defaults are what a job submitted by
    # hand gets: no deployment, the base endpoint name.
    assert request.endpoint_name is None and request.deploy_target is None
    assert inputs["endpoint_name"].default == "porto-seguro"
    assert inputs["deploy_target"].default == "none"
    assert tuple(inputs["deploy_target"].enum) == ("none", "local", "aci", "aks")


def test_node_component_inputs_repeat_the_pipeline_defaults_and_bounds():
    pipeline = yaml.safe_load(PIPELINE_YAML.read_text())
    for node, job in pipeline["jobs"].items():
        component = yaml.safe_load((PIPELINE_YAML.parent / job["component"]).read_text())
        assert component["code"] == "../..", node
        assert component["environment"]["conda_file"] == "../environment/conda.yaml", node
        for name, binding in job["inputs"].items():
            if isinstance(binding, str) and binding.startswith("${{parent.inputs."):
                parent = pipeline["inputs"][binding[len("${{parent.inputs.") : -2]]
                mine = component["inputs"][name]
                for key in ("type", "default", "min", "max", "enum"):
                    assert mine.get(key) == parent.get(key), (node, name, key)


def test_amlignore_keeps_local_state_out_of_the_uploaded_code():
    lines = (PIPELINE_YAML.parent.parent / ".amlignore").read_text().split()
    for entry in (".venv/", "node_modules/", ".local/", "tests/", "bench/", ".git/"):
        assert entry in lines


def test_real_pipeline_order_and_dependencies():
    definition = load_pipeline()
    assert definition.order() == NODES
    deps = {n: set(definition.nodes[n].depends_on) for n in NODES}
    # check_drift's decision reaches every step that works: on skip they do nothing.
    assert deps["check_drift"] == {"prep"}
    assert all(deps[slot] == {"prep", "check_drift"} for slot in TRAIN_SLOTS)  # side by side
    assert deps["score_champion"] == {"prep", "check_drift"}
    assert definition.dependents("check_drift") == set(NODES) - {"prep", "check_drift"}
    assert deps["select_best"] == set(TRAIN_SLOTS)
    # The gate and the registry see only the winner.
    assert deps["evaluate"] == {"prep", "select_best", "score_champion"}
    assert deps["register"] == {"select_best", "evaluate"}
    assert deps["smoke_test"] == {"deploy", "prep"}
    assert definition.dependents("train") == {
        "select_best", "evaluate", "register", "deploy", "smoke_test",
    }  # fmt: skip


def _outputs(definition, root: Path):
    return {
        (n, o): root / n / o for n, node in definition.nodes.items() for o in node.component.outputs
    }


def test_argv_follows_the_step_contract_and_drops_the_absent_optional_config(tmp_path):
    definition = load_pipeline()
    inputs = definition.resolve_inputs({"training_data": str(tmp_path / "my data")})
    outputs = _outputs(definition, tmp_path / "out")
    prep = definition.argv("prep", inputs, outputs)
    assert prep[:3] == [sys.executable, "-m", "steps.prep"]
    assert "--dataset-config" not in prep
    assert prep[prep.index("--data") + 1] == str(tmp_path / "my data")  # one argument
    assert prep[prep.index("--out") + 1] == str(tmp_path / "out" / "prep" / "prepared")

    with_config = definition.argv("prep", {**inputs, "dataset_config": "/c/ds.yaml"}, outputs)
    assert with_config[with_config.index("--dataset-config") + 1] == "/c/ds.yaml"

    evaluate = definition.argv("evaluate", inputs, outputs)
    winner = str(tmp_path / "out" / "select_best" / "model")
    assert evaluate[evaluate.index("--model") + 1] == winner
    assert evaluate[evaluate.index("--gate-metric") + 1] == "auc"

    register = definition.argv("register", inputs, outputs)
    assert register[register.index("--run-key") + 1] == "none"  # unset is never "" (UNSET)
    assert register[register.index("--code-version") + 1] == "dev"

    train = definition.argv("train", {**inputs, "learning_rate": 0.1}, outputs)
    assert train[train.index("--learning-rate") + 1] == "0.1"
    assert train[train.index("--class-weight") + 1] == "none"


def test_resolve_command_substitutes_inside_tokens_without_a_shell():
    argv = resolve_command(
        "python -m x --a ${{inputs.a}} $[[--b ${{inputs.b}}]] --c=${{inputs.c}} "
        "--quoted '${{inputs.a}}' --o ${{outputs.o}}",
        {"a": "two words; rm -rf /", "b": None, "c": 3},
        {"o": Path("/out dir")},
        python="/py",
    )
    assert argv == [
        "/py", "-m", "x", "--a", "two words; rm -rf /", "--c=3",
        "--quoted", "two words; rm -rf /", "--o", "/out dir",
    ]  # fmt: skip


def test_unknown_and_out_of_range_inputs_are_refused_by_name():
    definition = load_pipeline()
    with pytest.raises(DefinitionError, match="unknown pipeline input.*learning_rte"):
        definition.resolve_inputs({"training_data": "/d", "learning_rte": 0.1})
    with pytest.raises(DefinitionError, match="num_leaves.*above the maximum 4096"):
        definition.resolve_inputs({"training_data": "/d", "num_leaves": 5000})
    with pytest.raises(DefinitionError, match="gate_metric.*auc, normalized_gini, pr_auc"):
        definition.resolve_inputs({"training_data": "/d", "gate_metric": "f1"})
    with pytest.raises(DefinitionError, match="training_data is required"):
        definition.resolve_inputs({})


def test_a_cycle_or_a_dangling_reference_is_a_definition_error(tmp_path, h):
    path = h.write_pipeline(tmp_path, {"a": {"after": ["b"]}, "b": {"after": ["a"]}})
    with pytest.raises(DefinitionError, match="cycle"):
        load_pipeline(path)
    path = h.write_pipeline(tmp_path / "two", {"a": {"after": ["zzz"]}})
    with pytest.raises(DefinitionError, match="unknown job zzz"):
        load_pipeline(path)


def test_test_pipelines_order_by_their_bindings(tmp_path, h):
    path = h.write_pipeline(
        tmp_path,
        {"c": {"after": ["a", "b"]}, "a": {}, "b": {"after": ["a"]}},
    )
    assert load_pipeline(path).order() == ["a", "b", "c"]


def test_a_hostile_idempotency_key_cannot_break_the_commands_azure_ml_runs_in_bash():
    # Azure ML pastes literal inputs into the command text and runs it with bash; the
    # register component wraps run_key in single quotes, so a quote in a client's
    # Idempotency-Key would end the quoting and run the rest.
    key = 'http:it\'s $(touch /tmp/pwned) `id` "x"'
    inputs = TrainingRequest().pipeline_inputs(data_uri="x", lineage={"run_key": key})
    command = yaml.safe_load((PIPELINE_YAML.parent / "components" / "register.yaml").read_text())
    text = command["command"].replace("${{inputs.run_key}}", inputs["run_key"])
    argv = shlex.split(text)
    value = argv[argv.index("--run-key") + 1]
    assert value == inputs["run_key"]
    assert not set(value) & set("'\"$` ")
    assert urllib.parse.unquote(value) == key  # still readable lineage
