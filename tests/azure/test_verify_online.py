"""Verification on a throw-away managed online deployment, at the wire: register the
submitted model, an endpoint of its own with a 0 % deployment, score by deployment
name, delete the endpoint, also when scoring fails."""

from __future__ import annotations

import json

import pytest

from steps.verify_online import ManagedVerifyError, verify_on_managed_endpoint

ENDPOINT = "verify-0123456789ab"
SCORING = f"https://{ENDPOINT}.westeurope.inference.ml.azure.com/score"
MODEL_URI = "azureml://datastores/incoming/paths/models/byo-1/"
ROWS = [
    [{"ps_ind_01": 2, "ps_car_13": 0.88}, {"ps_ind_01": 1, "ps_car_13": -1}],
    [{"ps_ind_01": 3}],
]


class Workspace:
    """Models, one endpoint and its deployments as Azure ML holds them."""

    def __init__(self, wire) -> None:
        self.wire = wire
        self.models: dict[str, dict] = {}
        self.endpoint: dict | None = None
        self.deployments: dict[str, dict] = {}
        self.name = ENDPOINT

    def put_model(self, sent):
        body = sent.json()
        body["properties"].setdefault("flavors", {})
        self.models[sent.path] = body
        return (201, {"id": sent.path, "name": sent.path.rsplit("/", 1)[-1], **body})

    def endpoint_resource(self) -> dict:
        scoring = SCORING.replace(ENDPOINT, self.name)
        props = {**self.endpoint["properties"], "scoringUri": scoring,
                 "provisioningState": "Succeeded"}  # fmt: skip
        path = f"{self.wire.WS_PATH}/onlineEndpoints/{self.name}"
        return {"id": path, "name": self.name, "location": "westeurope",
                "identity": {"type": "SystemAssigned"}, "properties": props}  # fmt: skip

    def put_endpoint(self, sent):
        self.name = sent.path.rsplit("/", 1)[-1]
        self.endpoint = sent.json()
        return (200, self.endpoint_resource())

    def get_endpoint(self, sent):
        if self.endpoint is None:
            return self.wire.error(404, "NotFound", "endpoint not found")[:2]
        return (200, self.endpoint_resource())

    def delete_endpoint(self, sent):
        self.endpoint = None
        self.deployments.clear()
        return (200, None)

    def list_deployments(self, sent):
        base = f"{self.wire.WS_PATH}/onlineEndpoints/{self.name}/deployments"
        value = [{"id": f"{base}/{n}", "name": n, "location": "westeurope", **b}
                 for n, b in self.deployments.items()]  # fmt: skip
        return (200, {"value": value})

    def put_deployment(self, sent):
        return self.wire.put_online_deployment(sent, self.deployments)


@pytest.fixture
def workspace(fake_azure, wire):
    ws = Workspace(wire)
    base = f"{wire.WS_PATH}/onlineEndpoints/verify-[0-9a-f]{{12}}"
    fake_azure.on("GET", r"/models/[^/]+/versions\?", (200, {"value": []}))
    fake_azure.on("GET", r"/models/[^/?]+\?", wire.error(404, "NotFound", "no such model"))
    fake_azure.on("PUT", r"/models/[^/]+/versions/[^/?]+\?", ws.put_model)
    fake_azure.on("PUT", base + r"\?", ws.put_endpoint)
    fake_azure.on("GET", base + r"\?", ws.get_endpoint)
    fake_azure.on("DELETE", base + r"\?", ws.delete_endpoint)
    fake_azure.on("PUT", base + r"/deployments/[^/?]+\?", ws.put_deployment)
    fake_azure.on("GET", base + r"/deployments\?", ws.list_deployments)
    fake_azure.on("POST", base + r"/listKeys\?", (200, {"primaryKey": "k1", "secondaryKey": "k2"}))
    wire.route_deployment_assets(fake_azure)
    return ws


def _answer(sent):
    rows = json.loads(sent.body)["data"]
    return (200, {"probabilities": [0.25] * len(rows)})


def _verify(ml_client, tmp_path, layout="mlflow"):
    model_dir = tmp_path / "model"
    model_dir.mkdir(exist_ok=True)
    (model_dir / ("MLmodel" if layout == "mlflow" else "score.py")).write_text(
        "x", encoding="utf-8"
    )
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return verify_on_managed_endpoint(
        layout=layout,
        model_dir=model_dir,
        model_uri=MODEL_URI,
        model_name="porto-seguro-lgbm",
        records=ROWS,
        out=out,
        ml_client=ml_client,
        environ={},
        name=ENDPOINT,
    )


def test_the_model_is_registered_deployed_at_no_traffic_scored_and_deleted(
    ml_client, fake_azure, workspace, wire, tmp_path
):
    fake_azure.on("POST", r"inference\.ml\.azure\.com/score", _answer)

    probabilities, summary = _verify(ml_client, tmp_path)

    assert probabilities == [0.25, 0.25, 0.25]
    (model_put,) = fake_azure.requests("PUT", "/models/")
    assert model_put.path.endswith("/models/porto-seguro-lgbm-verify/versions/1")
    body = model_put.json()["properties"]
    assert body["modelType"] == "mlflow_model"
    assert body["modelUri"].endswith("/datastores/incoming/paths/models/byo-1/")
    (endpoint_put,) = fake_azure.requests("PUT", f"/onlineEndpoints/{ENDPOINT}")[:1]
    assert endpoint_put.json()["properties"]["authMode"] == "Key"
    assert endpoint_put.json()["properties"].get("traffic") in (None, {})
    (deployment_put,) = fake_azure.requests("PUT", "/deployments/")
    assert deployment_put.path.endswith(f"/onlineEndpoints/{ENDPOINT}/deployments/verify")
    props = deployment_put.json()["properties"]
    assert props["model"] == f"{wire.WS_PATH}/models/porto-seguro-lgbm-verify/versions/1"
    assert props["codeConfiguration"]["scoringScript"] == "steps/verify_mlflow_score.py"
    # Every PUT of the endpoint keeps traffic away from the test deployment (0 %).
    for put in fake_azure.requests("PUT", f"/onlineEndpoints/{ENDPOINT}"):
        if not put.path.endswith("/deployments/verify"):
            assert not (put.json()["properties"].get("traffic") or {})
    scores = fake_azure.requests("POST", "/score")
    assert [s.headers.get("azureml-model-deployment") for s in scores] == ["verify", "verify"]
    assert [len(json.loads(s.body)["data"]) for s in scores] == [2, 1]
    assert [s.method for s in fake_azure.sent][-1] == "DELETE"
    assert fake_azure.sent[-1].path.endswith(f"/onlineEndpoints/{ENDPOINT}")
    assert workspace.endpoint is None
    assert summary["torn_down"] is True
    assert summary["registered_model"] == "porto-seguro-lgbm-verify:1"
    assert not fake_azure.unrouted


def test_a_score_py_model_runs_its_own_script(ml_client, fake_azure, workspace, tmp_path):
    fake_azure.on("POST", r"inference\.ml\.azure\.com/score", _answer)

    _verify(ml_client, tmp_path, layout="script")

    assert fake_azure.requests("PUT", "/models/")[0].json()["properties"]["modelType"] == (
        "custom_model"
    )
    props = fake_azure.requests("PUT", "/deployments/")[0].json()["properties"]
    assert props["codeConfiguration"]["scoringScript"] == "score.py"


def test_scoring_that_fails_still_deletes_the_endpoint(
    ml_client, fake_azure, workspace, wire, tmp_path
):
    fake_azure.on(
        "POST", r"inference\.ml\.azure\.com/score", (200, {"probabilities": [0.1]})
    )  # one answer for two rows

    with pytest.raises(ManagedVerifyError) as caught:
        _verify(ml_client, tmp_path)

    assert "rows 1-2: expected 2 probabilities, got 1" in str(caught.value)
    assert "the champion was not touched" in str(caught.value)
    assert fake_azure.requests("DELETE", f"/onlineEndpoints/{ENDPOINT}")
    assert workspace.endpoint is None


def test_a_deployment_that_fails_to_provision_is_deleted_with_its_endpoint(
    ml_client, fake_azure, workspace, wire, tmp_path
):
    fake_azure.on(
        "PUT",
        r"/deployments/verify\?",
        wire.error(400, "BadArgument", "Not enough quota for Standard_DS3_v2"),
    )

    with pytest.raises(ManagedVerifyError) as caught:
        _verify(ml_client, tmp_path)

    assert "deployment verify on endpoint verify-0123456789ab failed" in str(caught.value)
    assert "Not enough quota" in str(caught.value)
    assert fake_azure.requests("DELETE", f"/onlineEndpoints/{ENDPOINT}")
    assert fake_azure.requests("POST", "/score") == []


def test_a_failed_teardown_is_reported_never_hidden(
    ml_client, fake_azure, workspace, wire, tmp_path
):
    fake_azure.on("POST", r"inference\.ml\.azure\.com/score", _answer)
    fake_azure.on(
        "DELETE",
        rf"/onlineEndpoints/{ENDPOINT}\?",
        wire.error(409, "Conflict", "operation in progress"),
    )

    with pytest.raises(ManagedVerifyError) as caught:
        _verify(ml_client, tmp_path)

    assert f"deleting endpoint {ENDPOINT} failed" in str(caught.value)
    assert "delete it by hand" in str(caught.value)


def test_the_verify_step_writes_what_the_gate_reads_from_a_managed_endpoint(
    ml_client, fake_azure, workspace, tmp_path
):
    import pyarrow.parquet as pq

    from steps.verify_endpoint import verify_endpoint

    fake_azure.on("POST", r"inference\.ml\.azure\.com/score", _answer)
    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n", encoding="utf-8")
    data = tmp_path / "data"
    data.mkdir()
    (data / "part-0.csv").write_text("ps_ind_01,target\n1,0\n2,1\n3,0\n", encoding="utf-8")
    out = tmp_path / "scored"
    out.mkdir()

    summary = verify_endpoint(
        model, data, "target", out, endpoint="managed", model_uri=MODEL_URI,
        ml_client=ml_client,
    )  # fmt: skip

    table = pq.read_table(out / "predictions.parquet")
    assert table.column("target").to_pylist() == [0, 1, 0]
    assert table.column("probability").to_pylist() == [0.25, 0.25, 0.25]
    assert summary["endpoint"] == "managed"
    assert summary["torn_down"] is True
    assert json.loads((out / "summary.json").read_text())["target_column"] == "target"
    assert workspace.endpoint is None
