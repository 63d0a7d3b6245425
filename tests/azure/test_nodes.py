"""On Azure ML a run starts only the nodes that do work for its request: the job is
built from the published step components, without unused candidate slots, without
deploy/smoke_test when nothing is deployed, and (retrain policy on_drift or
min_new_rows) as a drift probe first (pipeline/aml_job_graph.py)."""

from __future__ import annotations

import pytest

from pipeline.aml_job_graph import plan_nodes, train_slot
from pipeline.request import TrainingRequest

PUBLISHED = [
    "prep", "check_drift", "train", "train_1", "train_2", "train_3", "score_champion",
    "select_best", "evaluate", "register", "deploy", "smoke_test",
]  # fmt: skip
CORE = ["prep", "check_drift", "train", "score_champion", "select_best", "evaluate", "register"]


def _submit(submitter, fake_azure, wire, request: TrainingRequest) -> dict:
    fake_azure.on("PUT", r"/jobs/[^/?]+\?", wire.echo_job())
    submitter.submit(request, run_id="run-nodes-1", trigger="http")
    body = fake_azure.requests("PUT")[-1].json()["properties"]
    assert wire.unbound_node_inputs(body) == []  # the fake would have refused it anyway
    return body


def _binding(body: dict, node: str, name: str) -> str | None:
    given = body["jobs"][node]["inputs"].get(name)
    return given["value"] if given else None


def test_default_request_runs_seven_nodes_one_train_slot_no_deploy(submitter, fake_azure, wire):
    body = _submit(submitter, fake_azure, wire, TrainingRequest())

    assert list(body["jobs"]) == CORE  # 7: the aml backend deploys nothing by default
    assert set(body["jobs"]["select_best"]["inputs"]) == {"model_0"}
    assert _binding(body, "select_best", "model_0") == "${{parent.jobs.train.outputs.model}}"


def test_four_candidates_run_four_train_nodes(submitter, fake_azure, wire):
    request = TrainingRequest(
        candidates=[{"num_leaves": 15}, {"num_leaves": 63}, {"num_leaves": 127}, {}]
    )
    body = _submit(submitter, fake_azure, wire, request)

    trains = [n for n in body["jobs"] if n.startswith("train")]
    assert trains == ["train", "train_1", "train_2", "train_3"]
    assert len(body["jobs"]) == 10
    assert set(body["jobs"]["select_best"]["inputs"]) == {f"model_{i}" for i in range(4)}
    assert body["inputs"]["candidate_3"]["value"] == "none"  # slot 3 trains `params`


def test_two_candidates_leave_the_other_slots_out(submitter, fake_azure, wire):
    body = _submit(
        submitter, fake_azure, wire, TrainingRequest(candidates=[{"num_leaves": 15}, {}])
    )
    assert [n for n in body["jobs"] if n.startswith("train")] == ["train", "train_1"]
    assert set(body["jobs"]["select_best"]["inputs"]) == {"model_0", "model_1"}


def test_a_deployment_adds_deploy_and_smoke_test(submitter, fake_azure, wire):
    body = _submit(submitter, fake_azure, wire, TrainingRequest(deploy_target="aci"))

    assert list(body["jobs"]) == [*CORE, "deploy", "smoke_test"]
    assert body["inputs"]["deploy_target"]["value"] == "aci"
    assert body["inputs"]["endpoint_name"]["value"].startswith("porto-seguro-")


def test_a_drift_policy_request_starts_only_the_two_nodes_that_decide(submitter, fake_azure, wire):
    # The drift decision is taken at run time, so a request that may skip starts as a
    # probe; the training nodes follow in a job of their own only on `retrain`
    # (pipeline/drift_probe.py; tests/azure/test_drift_probe.py follows both jobs).
    request = TrainingRequest(retrain={"retrain_policy": "on_drift"})
    body = _submit(submitter, fake_azure, wire, request)

    assert list(body["jobs"]) == ["prep", "check_drift"]
    assert body["inputs"]["retrain_policy"]["value"] == "on_drift"


def test_an_optional_dataset_config_is_bound_only_when_given(submitter, fake_azure, wire):
    body = _submit(submitter, fake_azure, wire, TrainingRequest())
    assert "dataset_config" not in body["jobs"]["prep"]["inputs"]

    fake_azure.sent.clear()
    submitter.submit(
        TrainingRequest(), run_id="run-nodes-2", trigger="http", dataset_config="configs/ds.yaml"
    )
    body = fake_azure.requests("PUT")[-1].json()["properties"]
    assert _binding(body, "prep", "dataset_config") == "${{parent.inputs.dataset_config}}"
    assert body["inputs"]["dataset_config"]["uri"].endswith("/paths/configs/ds.yaml")


def test_the_published_pipeline_is_read_once_per_version(submitter, fake_azure, wire):
    fake_azure.on("PUT", r"/jobs/[^/?]+\?", wire.echo_job())
    submitter.submit(TrainingRequest(compute=["cpu-a", "cpu-b"]), run_id="run-n3", trigger="cli")
    submitter.submit(TrainingRequest(), run_id="run-n4", trigger="cli")

    assert len(fake_azure.requests("GET", "/components/aml_trigger_training/")) == 1
    assert len(fake_azure.requests("PUT")) == 3


def test_the_wire_refuses_a_node_bound_to_a_node_the_job_lacks(wire):
    body = {
        "inputs": {},
        "jobs": {
            "select_best": {
                "componentId": "/x/components/aml_trigger_select_best/versions/1",
                "inputs": {"model_0": {"value": "${{parent.jobs.train.outputs.model}}"}},
            }
        },
    }
    assert wire.unbound_node_inputs(body) == ["select_best.model_0 (node train is not in the job)"]


@pytest.mark.parametrize(
    ("count", "target", "expected"),
    [
        (1, "none", CORE),
        (1, "aci", [*CORE, "deploy", "smoke_test"]),
        (3, "local", [*CORE[:3], "train_1", "train_2", *CORE[3:], "deploy", "smoke_test"]),
    ],
)
def test_plan_nodes(count, target, expected):
    keep, unbind = plan_nodes(PUBLISHED, candidate_count=count, deploy_target=target)
    assert keep == expected
    assert unbind == ({"select_best": {f"model_{s}" for s in range(count, 4)}} if count < 4 else {})


def test_train_slots():
    assert [train_slot(n) for n in ("train", "train_1", "train_3", "trainer", "prep")] == [
        0, 1, 3, None, None,
    ]  # fmt: skip
