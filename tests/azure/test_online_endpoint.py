"""Blue/green online deployment at the wire: smoke test the new deployment alone,
then shift traffic; a failed smoke test deletes it and leaves traffic alone."""

from __future__ import annotations

import json

import mlflow
import pytest

from steps.champion import PROMOTION_TAG, Superseded, current_champion
from steps.online_endpoint import (
    OnlineDeployError,
    check_predictions,
    deploy_online,
    deployment_name,
    scoring_headers,
    workspace_from_env,
)

SCORING = "https://porto-seguro.westeurope.inference.ml.azure.com/score"
RESOURCES = {
    "containerResourceRequests": {"cpu": "0.5", "memory": "1Gi"},
    "containerResourceLimits": {"cpu": "1", "memory": "2Gi"},
}
ROWS = [{"ps_ind_01": 2, "ps_car_13": 0.88}, {"ps_ind_01": 1, "ps_car_13": -1}]


class Endpoint:
    """An online endpoint with one live deployment (model-v6) as Azure ML holds it."""

    def __init__(self, wire, *, kind: str = "Managed") -> None:
        self.wire = wire
        self.path = f"{wire.WS_PATH}/onlineEndpoints/porto-seguro"
        self.traffic = {"model-v6": 100}
        self.kind = kind
        self.deployments: dict[str, dict] = {"model-v6": {}}

    def resource(self) -> dict:
        props = {
            "authMode": "Key",
            "scoringUri": SCORING,
            "traffic": dict(self.traffic),
            "provisioningState": "Succeeded",
        }
        if self.kind == "Kubernetes":
            props["compute"] = "aks-prod"
        return {
            "id": self.path,
            "name": "porto-seguro",
            "location": "westeurope",
            "identity": {"type": "SystemAssigned"},
            "properties": props,
        }

    def get(self, sent):
        return (200, self.resource())

    def put(self, sent):
        self.traffic = sent.json()["properties"].get("traffic", {})
        return (200, self.resource())

    def put_deployment(self, sent):
        defaults = {"containerResourceRequirements": RESOURCES} if self.kind == "Kubernetes" else {}
        return self.wire.put_online_deployment(sent, self.deployments, **defaults)

    def list_deployments(self, sent):
        live = {
            "properties": {
                "endpointComputeType": self.kind,
                "scaleSettings": {"scaleType": "Default"},
            },
            "sku": {"name": "Default", "capacity": 1},
        }
        if self.kind == "Kubernetes":
            live["properties"]["containerResourceRequirements"] = RESOURCES
        value = [
            {
                "id": f"{self.path}/deployments/{n}",
                "name": n,
                "location": "westeurope",
                **(b or live),
            }
            for n, b in self.deployments.items()
        ]
        return (200, {"value": value})

    def delete_deployment(self, sent):
        self.deployments.pop(sent.path.rsplit("/", 1)[-1], None)
        return (200, None)


def _workspace(fake_azure, wire, endpoint: Endpoint, answer) -> None:
    base = endpoint.path
    fake_azure.on("GET", base + r"\?", endpoint.get)
    fake_azure.on("PUT", base + r"\?", endpoint.put)
    fake_azure.on("PUT", base + r"/deployments/[^/?]+\?", endpoint.put_deployment)
    fake_azure.on("DELETE", base + r"/deployments/[^/?]+\?", endpoint.delete_deployment)
    fake_azure.on("GET", base + r"/deployments\?", endpoint.list_deployments)
    fake_azure.on("POST", base + r"/listKeys\?", (200, {"primaryKey": "k1", "secondaryKey": "k2"}))
    fake_azure.on("POST", r"inference\.ml\.azure\.com/score", answer)
    wire.route_deployment_assets(fake_azure)


def _good(sent):
    rows = json.loads(sent.body)["data"]
    return (200, {"probabilities": [0.1] * len(rows), "model_version": "7"})


def _deploy(ml_client, tmp_path, target="aci", environ=None, endpoint_name="porto-seguro", **extra):
    return deploy_online(
        target=target,
        endpoint_name=endpoint_name,
        model_name="porto-seguro-lgbm",
        model_version="7",
        sample_rows=ROWS,
        out_dir=tmp_path / "out",
        ml_client=ml_client,
        environ=environ or {},
        **extra,
    )


def test_a_passing_smoke_test_shifts_all_traffic_to_the_new_deployment(
    ml_client, fake_azure, wire, tmp_path
):
    endpoint = Endpoint(wire)
    _workspace(fake_azure, wire, endpoint, _good)

    summary = _deploy(ml_client, tmp_path)

    steps = [(s.method, s.path.rsplit("/", 1)[-1]) for s in fake_azure.sent]
    put_deployment = steps.index(("PUT", "model-v7"))
    smoke = next(i for i, s in enumerate(fake_azure.sent) if "inference.ml" in s.url)
    shift = max(i for i, (m, last) in enumerate(steps) if (m, last) == ("PUT", "porto-seguro"))
    assert put_deployment < smoke < shift  # create, test alone, then shift
    body = fake_azure.requests("PUT", "/deployments/model-v7")[0].json()
    props = body["properties"]
    assert props["endpointComputeType"] == "Managed"
    assert props["model"].endswith("/models/porto-seguro-lgbm/versions/7")
    assert props["codeConfiguration"]["scoringScript"] == "steps/score.py"
    assert props["codeConfiguration"]["codeId"].endswith("/codes/steps-snapshot/versions/1")
    assert props["environmentId"].endswith("/environments/aml-trigger-steps/versions/0.1.0-abc")
    scored = fake_azure.sent[smoke]
    assert scored.headers["azureml-model-deployment"] == "model-v7"
    assert scored.headers["Authorization"] == "Bearer k1"
    assert json.loads(scored.body) == {"data": ROWS}
    assert endpoint.traffic == {"model-v7": 100}  # the SDK leaves 0 % entries out
    assert "model-v6" in endpoint.deployments  # kept, at 0 %, to roll back to
    assert summary == {
        "target": "aci",
        "endpoint_name": "porto-seguro",
        "scoring_uri": SCORING,
        "deployment": "model-v7",
        "model_version": "7",
        "skipped_reason": None,
        "rollback_deployment": "model-v6",
        "retired_deployments": [],
        "retire_errors": [],
    }


def test_a_failing_smoke_test_deletes_the_new_deployment_and_keeps_traffic(
    ml_client, fake_azure, wire, tmp_path
):
    endpoint = Endpoint(wire)
    _workspace(
        fake_azure,
        wire,
        endpoint,
        (500, {"message": "An unexpected error occurred in scoring script."}),
    )

    with pytest.raises(OnlineDeployError) as caught:
        _deploy(ml_client, tmp_path)

    message = str(caught.value)
    assert "deployment model-v7 on endpoint porto-seguro: smoke test failed" in message
    assert "HTTP 500" in message
    assert "deleted model-v7, traffic unchanged (model-v6 100%)" in message
    assert [s.method for s in fake_azure.requests(contains="/deployments/model-v7")] == [
        "PUT",
        "DELETE",
    ]
    endpoint_puts = [s for s in fake_azure.requests("PUT") if s.path.endswith("/porto-seguro")]
    assert endpoint_puts == []  # traffic never touched
    assert endpoint.traffic == {"model-v6": 100}
    assert "model-v7" not in endpoint.deployments


def test_wrong_answers_fail_the_smoke_test_too(ml_client, fake_azure, wire, tmp_path):
    endpoint = Endpoint(wire)
    _workspace(fake_azure, wire, endpoint, (200, {"probabilities": [0.2]}))
    with pytest.raises(OnlineDeployError, match="expected 2 probabilities, got 1"):
        _deploy(ml_client, tmp_path)
    assert endpoint.traffic == {"model-v6": 100}


def test_aks_deploys_a_kubernetes_deployment_and_needs_the_compute_name(
    ml_client, fake_azure, wire, tmp_path
):
    endpoint = Endpoint(wire, kind="Kubernetes")
    _workspace(fake_azure, wire, endpoint, _good)

    summary = _deploy(ml_client, tmp_path, target="aks", environ={"AML_AKS_COMPUTE": "aks-prod"})

    props = fake_azure.requests("PUT", "/deployments/model-v7")[0].json()["properties"]
    assert props["endpointComputeType"] == "Kubernetes"
    assert summary["deployment"] == "model-v7" and endpoint.traffic["model-v7"] == 100


def test_a_new_aks_endpoint_without_compute_setting_is_refused(
    ml_client, fake_azure, wire, tmp_path
):
    fake_azure.on(
        "GET", r"/onlineEndpoints/porto-seguro\?", wire.error(404, "NotFound", "no endpoint")
    )
    with pytest.raises(OnlineDeployError, match="AML_AKS_COMPUTE"):
        _deploy(ml_client, tmp_path, target="aks")
    assert fake_azure.requests("PUT") == []


def test_scoring_headers_carry_the_endpoint_key(ml_client, fake_azure, wire):
    endpoint = Endpoint(wire)
    _workspace(fake_azure, wire, endpoint, _good)
    assert scoring_headers(endpoint_name="porto-seguro", ml_client=ml_client) == {
        "Authorization": "Bearer k1"
    }


def test_the_workspace_comes_from_the_job_then_the_settings():
    job = {
        "AZUREML_ARM_SUBSCRIPTION": "s",
        "AZUREML_ARM_RESOURCEGROUP": "g",
        "AZUREML_ARM_WORKSPACE_NAME": "w",
    }
    assert workspace_from_env(job) == ("s", "g", "w")
    assert workspace_from_env({"AML_SUBSCRIPTION_ID": "s2", **job}) == ("s", "g", "w")
    with pytest.raises(OnlineDeployError, match="AZUREML_ARM_WORKSPACE_NAME or AML_WORKSPACE"):
        workspace_from_env({"AML_SUBSCRIPTION_ID": "s", "AML_RESOURCE_GROUP": "g"})


def test_deployment_names_and_answer_checks():
    assert deployment_name("7") == "model-v7"
    assert deployment_name("1.2_beta") == "model-v1-2-beta"
    assert check_predictions({"probabilities": [0.0, 1.0]}, 2) is None
    assert check_predictions(json.dumps({"probabilities": [0.5]}), 1) is None
    assert "between 0 and 1" in check_predictions({"probabilities": [1.5]}, 1)
    assert 'no "probabilities"' in check_predictions({"error": "bad"}, 1)


def test_the_deployment_code_is_the_snapshot_publish_uploaded(tmp_path):
    """Same content hash, so Azure ML finds the published code asset and does not
    upload the step code again from inside the deploy job."""
    from azure.ai.ml._utils._asset_utils import IgnoreFile, get_content_hash

    from pipeline.publish import REPO_ROOT, code_snapshot
    from steps.online_endpoint import _code_snapshot

    published = code_snapshot(REPO_ROOT, tmp_path / "a")
    deployed = _code_snapshot(tmp_path / "b")
    assert (deployed / "steps" / "score.py").is_file()
    assert get_content_hash(str(published), IgnoreFile()) == get_content_hash(
        str(deployed), IgnoreFile()
    )


def test_a_deployment_that_fails_to_provision_is_removed_and_traffic_kept(
    ml_client, fake_azure, wire, tmp_path
):
    endpoint = Endpoint(wire)
    _workspace(fake_azure, wire, endpoint, _good)
    fake_azure.on(
        "PUT",
        endpoint.path + r"/deployments/model-v7\?",
        wire.error(400, "BadArgument", "Instance type Standard_DS3_v2 has no quota"),
    )

    with pytest.raises(OnlineDeployError) as caught:
        _deploy(ml_client, tmp_path)

    message = str(caught.value)
    assert "creating it failed: HTTP 400" in message and "no quota" in message
    assert "traffic unchanged (model-v6 100%)" in message
    assert fake_azure.requests("DELETE", "/deployments/model-v7")
    assert not any("inference.ml" in s.url for s in fake_azure.sent)  # never smoke tested
    assert endpoint.traffic == {"model-v6": 100}


def _ours(endpoint: Endpoint, name: str) -> dict:
    """A deployment this pipeline made earlier, as the service lists it."""
    return {
        "tags": {"aml_trigger.model": f"azureml:porto-seguro-lgbm:{name[7:]}"},
        "properties": {"endpointComputeType": "Managed", "scaleSettings": {"scaleType": "Default"}},
        "sku": {"name": "Default", "capacity": 1},
    }


def test_a_promotion_keeps_the_previous_deployment_and_deletes_older_ones(
    ml_client, fake_azure, wire, tmp_path
):
    endpoint = Endpoint(wire)
    for old in ("model-v4", "model-v5", "model-v6"):
        endpoint.deployments[old] = _ours(endpoint, old)
    endpoint.deployments["manual-blue"] = {}  # someone else's: no tag, never touched
    _workspace(fake_azure, wire, endpoint, _good)

    summary = _deploy(ml_client, tmp_path)

    deleted = [s.path.rsplit("/", 1)[-1] for s in fake_azure.requests("DELETE")]
    assert deleted == ["model-v4", "model-v5"]
    assert set(endpoint.deployments) == {"model-v6", "model-v7", "manual-blue"}
    assert endpoint.traffic == {"model-v7": 100}
    assert summary["rollback_deployment"] == "model-v6"
    assert summary["retired_deployments"] == ["model-v4", "model-v5"]
    # Deleting starts after traffic moved: nothing that serves is ever deleted.
    shift = max(
        i for i, s in enumerate(fake_azure.sent) if s.method == "PUT" and s.path == endpoint.path
    )
    first_delete = next(i for i, s in enumerate(fake_azure.sent) if s.method == "DELETE")
    assert shift < first_delete


def test_a_failed_delete_of_an_old_deployment_is_reported_not_fatal(
    ml_client, fake_azure, wire, tmp_path
):
    endpoint = Endpoint(wire)
    endpoint.deployments["model-v5"] = _ours(endpoint, "model-v5")
    _workspace(fake_azure, wire, endpoint, _good)
    fake_azure.on(
        "DELETE",
        endpoint.path + r"/deployments/model-v5\?",
        wire.error(409, "Conflict", "deployment model-v5 is being updated"),
    )

    summary = _deploy(ml_client, tmp_path)

    assert endpoint.traffic == {"model-v7": 100}
    assert summary["retired_deployments"] == []
    assert summary["retire_errors"] and "model-v5: HTTP 409" in summary["retire_errors"][0]


def test_a_bad_endpoint_name_is_refused_before_any_request(ml_client, fake_azure, tmp_path):
    with pytest.raises(OnlineDeployError, match="3-32 characters") as caught:
        _deploy(ml_client, tmp_path, endpoint_name="porto_seguro")
    assert "--endpoint-name 'porto_seguro'" in str(caught.value)
    assert fake_azure.sent == []


def test_a_version_outranked_before_the_shift_is_deleted_and_traffic_kept(
    ml_client, fake_azure, wire, tmp_path
):
    # The registry after the documented race: v7 (this run) and its rival v8 both
    # wrote promotion 2 over v6's 1; the tie goes to v8, so v8 is the champion.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    registry.create_registered_model("porto-seguro-lgbm")
    for _ in range(8):
        registry.create_model_version("porto-seguro-lgbm", source=str(tmp_path / "m"))
    for version, promotion in (("6", "1"), ("7", "2"), ("8", "2")):
        registry.set_model_version_tag("porto-seguro-lgbm", version, PROMOTION_TAG, promotion)
    endpoint = Endpoint(wire)
    _workspace(fake_azure, wire, endpoint, _good)

    with pytest.raises(Superseded) as caught:
        _deploy(ml_client, tmp_path,
                read_champion=lambda: current_champion(registry, "porto-seguro-lgbm"))  # fmt: skip

    assert caught.value.champion == "8"
    assert caught.value.cleanup == "deleted model-v7, traffic unchanged (model-v6 100%)"
    assert any("inference.ml" in s.url for s in fake_azure.sent)  # checked after the smoke test
    assert [s.method for s in fake_azure.requests(contains="/deployments/model-v7")] == [
        "PUT",
        "DELETE",
    ]
    endpoint_writes = [
        s for s in fake_azure.sent
        if s.method in {"PUT", "PATCH"} and s.path.endswith("/porto-seguro")
    ]  # fmt: skip
    assert endpoint_writes == []  # no traffic shift was sent
    assert endpoint.traffic == {"model-v6": 100} and "model-v7" not in endpoint.deployments


def test_a_champion_read_that_fails_deletes_the_new_deployment(
    ml_client, fake_azure, wire, tmp_path
):
    endpoint = Endpoint(wire)
    _workspace(fake_azure, wire, endpoint, _good)

    def unreachable():
        raise ConnectionError("registry unreachable")

    with pytest.raises(OnlineDeployError) as caught:
        _deploy(ml_client, tmp_path, read_champion=unreachable)
    assert "re-reading the champion before the traffic shift failed" in str(caught.value)
    assert "deleted model-v7, traffic unchanged (model-v6 100%)" in str(caught.value)
    assert endpoint.traffic == {"model-v6": 100} and "model-v7" not in endpoint.deployments
