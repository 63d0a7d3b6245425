"""`compute ensure`: AmlCompute clusters created or updated at the wire, idempotently."""

from __future__ import annotations

import json

import pytest

from pipeline.clusters import (
    ClusterConfigError,
    ClusterSpec,
    ObservedCluster,
    ensure_clusters,
    load_cluster_config,
    plan,
)
from pipeline.settings import Settings

UAI = (
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/"
    "userAssignedIdentities/ml-jobs"
)
CONFIG = f"""
clusters:
  - name: cpu-prep
    vm_size: Standard_DS3_v2
    max_nodes: 2
    tier: low_priority
  - name: cpu-train
    vm_size: Standard_F16s_v2
    max_nodes: 4
    idle_time_before_scale_down: 300
    identity: {UAI}
"""


class Computes:
    """Clusters as the workspace stores them: PUT stores (answering 201 with an
    Azure-AsyncOperation to poll, as ARM does), GET returns the stored body or 404."""

    def __init__(self, wire) -> None:
        self.wire = wire
        self.stored: dict[str, dict] = {}

    def put(self, sent):
        name = sent.path.rsplit("/", 1)[-1]
        body = sent.json()
        props = body["properties"]
        props["provisioningState"] = "Succeeded"
        self.stored[name] = {
            "id": f"{self.wire.WS_PATH}/computes/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/computes",
            **body,
        }
        poll = f"https://management.azure.com{self.wire.WS_PATH}/computeOperationsStatus/op1"
        return (201, self.stored[name], {"Azure-AsyncOperation": poll})

    def get(self, sent):
        name = sent.path.rsplit("/", 1)[-1]
        if name in self.stored:
            return (200, self.stored[name])
        return self.wire.error(404, "NotFound", f"compute {name} not found")[:2]


@pytest.fixture
def computes(fake_azure, wire):
    store = Computes(wire)
    fake_azure.on("PUT", r"/computes/[^/?]+\?", store.put)
    fake_azure.on("GET", r"/computes/[^/?]+\?", store.get)
    fake_azure.on("GET", r"/computeOperationsStatus/", (200, {"status": "Succeeded"}))
    fake_azure.on(
        "GET",
        rf"/workspaces/{wire.WS}\?",
        (200, {"id": wire.WS_PATH, "name": wire.WS, "location": "westeurope", "properties": {}}),
    )
    return store


def _ensure(tmp_path, fake_azure, fake_credential, text=CONFIG, **kw):
    path = tmp_path / "clusters.yaml"
    path.write_text(text, encoding="utf-8")
    return ensure_clusters(
        Settings.from_env(),
        load_cluster_config(path),
        credential=fake_credential,
        transport=fake_azure,
        retry_total=0,
        polling_interval=0,
        **kw,
    )


def test_absent_clusters_are_created_with_scale_settings_tier_and_identity(
    aml_env, fake_azure, fake_credential, computes, tmp_path
):
    changes = _ensure(tmp_path, fake_azure, fake_credential)

    assert [(c.name, c.action) for c in changes] == [
        ("cpu-prep", "create"),
        ("cpu-train", "create"),
    ]
    puts = fake_azure.requests("PUT", "/computes/")
    assert [p.path.rsplit("/", 1)[-1] for p in puts] == ["cpu-prep", "cpu-train"]
    prep = puts[0].json()
    assert prep["location"] == "westeurope"  # the workspace's, read first
    assert prep["properties"]["computeType"] == "AmlCompute"
    inner = prep["properties"]["properties"]
    assert inner["vmSize"] == "Standard_DS3_v2"
    assert inner["vmPriority"] == "LowPriority"
    assert inner["scaleSettings"] == {
        "maxNodeCount": 2,
        "minNodeCount": 0,
        "nodeIdleTimeBeforeScaleDown": "PT2M",
    }
    train = puts[1].json()
    assert train["properties"]["properties"]["vmPriority"] == "Dedicated"
    assert train["properties"]["properties"]["scaleSettings"]["nodeIdleTimeBeforeScaleDown"] == (
        "PT5M"
    )
    assert train["identity"]["type"] == "UserAssigned"
    assert list(train["identity"]["userAssignedIdentities"]) == [UAI]
    assert not fake_azure.unrouted


def test_ensuring_the_same_config_again_sends_no_write(
    aml_env, fake_azure, fake_credential, computes, tmp_path
):
    _ensure(tmp_path, fake_azure, fake_credential)
    writes = len(fake_azure.requests("PUT"))

    again = _ensure(tmp_path, fake_azure, fake_credential)

    assert [c.action for c in again] == ["unchanged", "unchanged"]
    assert len(fake_azure.requests("PUT")) == writes


def test_a_changed_max_nodes_is_an_update_of_that_cluster_only(
    aml_env, fake_azure, fake_credential, computes, tmp_path
):
    _ensure(tmp_path, fake_azure, fake_credential)
    writes = len(fake_azure.requests("PUT"))

    changed = _ensure(
        tmp_path, fake_azure, fake_credential, CONFIG.replace("max_nodes: 4", "max_nodes: 8")
    )

    assert [c.action for c in changed] == ["unchanged", "update"]
    assert changed[1].changes == ["max_nodes 4 -> 8"]
    put = fake_azure.requests("PUT")[writes:]
    assert len(put) == 1
    assert put[0].json()["properties"]["properties"]["scaleSettings"]["maxNodeCount"] == 8


def test_dry_run_reads_and_plans_but_writes_nothing(
    aml_env, fake_azure, fake_credential, computes, tmp_path
):
    changes = _ensure(tmp_path, fake_azure, fake_credential, dry_run=True)

    assert [c.action for c in changes] == ["create", "create"]
    assert fake_azure.requests("PUT") == []
    assert len(fake_azure.requests("GET", "/computes/")) == 2


def test_a_new_vm_size_for_an_existing_cluster_is_refused_not_sent(
    aml_env, fake_azure, fake_credential, computes, tmp_path
):
    _ensure(tmp_path, fake_azure, fake_credential)
    writes = len(fake_azure.requests("PUT"))

    changes = _ensure(
        tmp_path, fake_azure, fake_credential, CONFIG.replace("Standard_DS3_v2", "Standard_D4s_v3")
    )

    assert changes[0].action == "refused"
    assert "vm_size is 'Standard_DS3_v2'" in changes[0].changes[0]
    assert len(fake_azure.requests("PUT")) == writes


def test_a_refused_create_names_the_cluster_and_the_service_reason(
    aml_env, fake_azure, fake_credential, computes, wire, tmp_path
):
    from pipeline.submitter import SubmissionError

    fake_azure.on(
        "PUT", r"/computes/", wire.error(400, "BadArgument", "Quota exceeded for LowPriority cores")
    )
    with pytest.raises(SubmissionError) as caught:
        _ensure(tmp_path, fake_azure, fake_credential)
    assert "cpu-prep" in caught.value.message
    assert "Quota exceeded" in caught.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("clusters: []", "clusters: List should have at least 1 item"),
        ("clusters: [{name: x, vm_size: Standard_DS3_v2, max_nodes: 1}]", "clusters.0.name"),
        ("clusters: [{name: cpu, vm_size: DS3, max_nodes: 1}]", "clusters.0.vm_size"),
        ("clusters: [{name: cpu-1, vm_size: Standard_DS3_v2, max_nodes: 1}]",
         "a '-' must be followed by a letter"),
        ("clusters:\n  - {name: cpu, vm_size: Standard_DS3_v2, max_nodes: 1}\n"
         "  - {name: CPU, vm_size: Standard_DS3_v2, max_nodes: 1}", "listed twice"),
        ("clusters: [{name: cpu, vm_size: Standard_DS3_v2, max_nodes: 2, min_nodes: 3}]",
         "min_nodes 3 is above max_nodes 2"),
        ("clusters: [{name: cpu, vm_size: Standard_DS3_v2, max_nodes: 1, tier: spot}]",
         "clusters.0.tier"),
        ("clusters: [{name: cpu, vm_size: Standard_DS3_v2, max_nodes: 1, identity: me}]",
         "identity 'me'"),
        ("clusters: [{name: cpu, vm_size: Standard_DS3_v2, max_nodes: 1, size: 3}]",
         "clusters.0.size: Extra inputs are not permitted"),
        ("clusters: [{name: cpu, vm_size: Standard_DS3_v2, max_nodes: '2'}]",
         "clusters.0.max_nodes"),
    ],
)  # fmt: skip
def test_bad_configs_name_the_field(tmp_path, text, expected):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ClusterConfigError) as caught:
        load_cluster_config(path)
    assert expected in str(caught.value)


def test_json_configs_are_read_too(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"clusters": [{"name": "gpu-a", "vm_size": "Standard_NC6s_v3",
                                              "max_nodes": 1}]}), encoding="utf-8")  # fmt: skip
    assert load_cluster_config(path).clusters[0].tier == "dedicated"


def test_identity_and_scale_down_changes_are_updates():
    spec = ClusterSpec(
        name="cpu", vm_size="Standard_DS3_v2", max_nodes=2, identity="system_assigned"
    )
    found = ObservedCluster("standard_ds3_v2", "dedicated", 0, 2, 60, None)
    change = plan(spec, found)
    assert change.action == "update"
    assert change.changes == [
        "idle_time_before_scale_down 60 -> 120",
        "identity None -> 'system_assigned'",
    ]


def test_the_command_prints_the_plan_as_json_and_fails_on_a_refusal(
    aml_env, fake_azure, fake_credential, computes, tmp_path, monkeypatch, capsys
):
    import cli.compute_commands as commands
    from cli.main import main

    monkeypatch.setattr(
        commands,
        "CLIENT_OPTIONS",
        {"credential": fake_credential, "transport": fake_azure, "retry_total": 0,
         "polling_interval": 0},
    )  # fmt: skip
    path = tmp_path / "clusters.yaml"
    path.write_text(CONFIG, encoding="utf-8")

    assert main(["compute", "ensure", str(path), "--dry-run", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["dry_run"] is True
    assert [(c["name"], c["action"]) for c in shown["clusters"]] == [
        ("cpu-prep", "create"),
        ("cpu-train", "create"),
    ]
    assert fake_azure.requests("PUT") == []

    assert main(["compute", "ensure", str(path)]) == 0
    assert "2 cluster(s): 2 changed, 0 refused" in capsys.readouterr().out
    path.write_text(CONFIG.replace("tier: low_priority", "tier: dedicated"), encoding="utf-8")
    assert main(["compute", "ensure", str(path)]) == 1
    assert "cpu-prep: REFUSED: tier is 'low_priority'" in capsys.readouterr().err


def test_the_command_names_a_bad_config_and_missing_settings(home, tmp_path, capsys):
    from cli.main import main

    path = tmp_path / "clusters.yaml"
    path.write_text("clusters: [{name: cpu, vm_size: Standard_DS3_v2}]", encoding="utf-8")
    assert main(["compute", "ensure", str(path)]) == 2
    assert "clusters.0.max_nodes: Field required" in capsys.readouterr().err
    path.write_text(CONFIG, encoding="utf-8")
    assert main(["compute", "ensure", str(path), "--dry-run"]) == 1
    assert "AML_SUBSCRIPTION_ID" in capsys.readouterr().err
