"""Azure ML at the HTTP wire: the real azure-ai-ml SDK, a fake transport behind it.

`FakeAzure` is an azure-core `HttpTransport`: it routes method + URL regex to
canned JSON (or a function of the request) and records every request, so tests
assert on exactly what the SDK would send to Azure. `fake_credential` returns a
JWT-shaped token with aud https://ml.azure.com (the SDK decodes it; signature
unchecked). Retries and polling are set to zero so failures are fast.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import HttpResponse, HttpTransport
from azure.core.utils import CaseInsensitiveDict

SUB = "00000000-1111-2222-3333-444444444444"
RG = "rg-ml"
WS = "ws-ml"
WS_PATH = (
    f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/"
    f"Microsoft.MachineLearningServices/workspaces/{WS}"
)


def _b64(doc: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


class FakeCredential:
    """A credential shaped like azure-identity's: a JWT for Azure ML's audience."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.append(scopes)
        now = int(time.time())
        claims = {"aud": "https://ml.azure.com", "oid": "oid", "tid": "tid", "exp": now + 3600}
        token = ".".join([_b64({"alg": "none", "typ": "JWT"}), _b64(claims), "c2ln"])
        return AccessToken(token, now + 3600)


class _Response(HttpResponse):
    def __init__(self, request, status: int, body: bytes, headers: dict[str, str]) -> None:
        super().__init__(request, None)
        self.status_code = status
        self.headers = CaseInsensitiveDict(headers)
        self.reason = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content"}.get(
            status, "Error"
        )
        self.content_type = self.headers.get("Content-Type")
        self._body = body

    def body(self) -> bytes:
        return self._body

    def read(self) -> bytes:
        return self._body

    @property
    def content(self) -> bytes:
        return self._body

    def iter_bytes(self, **_: Any):
        yield self._body

    def stream_download(self, *_: Any, **__: Any):
        yield self._body

    def text(self, encoding: str | None = None) -> str:
        return self._body.decode(encoding or "utf-8")

    def json(self) -> Any:
        return json.loads(self._body) if self._body else None


@dataclass
class Sent:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None

    @property
    def path(self) -> str:
        return self.url.split("?", 1)[0].split(".com", 1)[-1]

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    responses: list[Any]
    hits: int = 0


@dataclass
class FakeAzure(HttpTransport):
    """Routes requests to canned responses; unmatched requests get a 404 and are kept
    in `unrouted` so a test can fail on them."""

    routes: list[Route] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    unrouted: list[Sent] = field(default_factory=list)

    def on(self, method: str, pattern: str, *responses: Any) -> Route:
        """Each response is (status, body[, headers]) or a callable(Sent) returning one;
        the last response repeats."""
        route = Route(method, re.compile(pattern), list(responses))
        self.routes.insert(0, route)  # later registrations win
        return route

    def send(self, request, **kwargs: Any) -> _Response:
        body = request.body if isinstance(request.body, bytes) else None
        if body is None and request.body is not None:
            body = str(request.body).encode()
        if body is None and getattr(request, "content", None):
            body = request.content if isinstance(request.content, bytes) else None
        sent = Sent(request.method, request.url, dict(request.headers), body)
        self.sent.append(sent)
        for route in self.routes:
            if route.method == request.method and route.pattern.search(request.url):
                answer = route.responses[min(route.hits, len(route.responses) - 1)]
                route.hits += 1
                if callable(answer):
                    answer = answer(sent)
                status, payload, *rest = answer
                headers = {"Content-Type": "application/json", **(rest[0] if rest else {})}
                data = b"" if payload is None else json.dumps(payload).encode()
                return _Response(request, status, data, headers)
        self.unrouted.append(sent)
        error = {"error": {"code": "NotFound", "message": f"no route for {request.url}"}}
        return _Response(request, 404, json.dumps(error).encode(), {})

    def requests(self, method: str | None = None, contains: str = "") -> list[Sent]:
        return [
            s
            for s in self.sent
            if (method is None or s.method == method) and contains in s.url.split("?", 1)[0]
        ]

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> FakeAzure:
        return self

    def __exit__(self, *args: Any) -> None:
        pass


def error(status: int, code: str, message: str, headers: dict | None = None) -> tuple:
    return (status, {"error": {"code": code, "message": message}}, headers or {})


def job_resource(
    name: str,
    status: str = "NotStarted",
    *,
    body: dict | None = None,
    properties: dict | None = None,
    tags: dict | None = None,
) -> dict:
    """A pipeline job as the service returns it (GET/PUT .../jobs/{name})."""
    props: dict[str, Any] = {
        "jobType": "Pipeline",
        "status": status,
        "experimentName": "aml-trigger",
        "tags": tags or {},
        "properties": properties or {},
        "inputs": {},
        "outputs": {},
        "jobs": {},
        "settings": {},
        "services": {"Studio": {"endpoint": f"https://ml.azure.com/runs/{name}"}},
    }
    if body:
        props.update(body)
        props["status"] = status
    return {
        "id": f"{WS_PATH}/jobs/{name}",
        "name": name,
        "type": "Microsoft.MachineLearningServices/workspaces/jobs",
        "systemData": {"createdAt": "2026-11-22T08:00:00Z", "createdBy": "func"},
        "properties": props,
    }


TRAINING_PIPELINE = Path(__file__).resolve().parents[2] / "pipeline" / "training_pipeline.yaml"


def unbound_inputs(job_inputs: dict, component_inputs: dict) -> list[str]:
    """The component's inputs a job leaves without a value. The service resolves each
    non-optional input from the job, else from the component's default; an empty
    string is no value (the SDK drops "" from the body, and a default of "" is "not
    specified" too: azure-sdk-for-python#38892, MachineLearningNotebooks#668)."""
    missing = []
    for name, spec in component_inputs.items():
        if spec.get("optional"):
            continue
        given = job_inputs.get(name) or {}
        value = given.get("value", given.get("uri"))
        if value not in (None, ""):
            continue
        if spec.get("default") not in (None, ""):
            continue
        missing.append(name)
    return missing


_BINDING = re.compile(
    r"^\$\{\{parent\.(inputs\.(?P<input>\w+)|jobs\.(?P<node>\w+)\.outputs\.\w+)\}\}$"
)


def _step_components() -> dict[str, dict]:
    folder = TRAINING_PIPELINE.parent / "components"
    specs = [yaml.safe_load(f.read_text(encoding="utf-8")) for f in folder.glob("*.yaml")]
    return {spec["name"]: spec.get("inputs") or {} for spec in specs}


def unbound_node_inputs(body: dict) -> list[str]:
    """What a pipeline job built from step components leaves without a value, as the
    service resolves it: each node's component inputs (bound by the node or by a
    non-empty default), each `${{parent.inputs.x}}` to a job input with a value, each
    `${{parent.jobs.n.outputs.o}}` to a node of the job."""
    components = _step_components()
    job_inputs = body.get("inputs") or {}
    problems = []
    for node, spec in (body.get("jobs") or {}).items():
        component = (spec.get("componentId") or "").split("/components/")[-1].split("/")[0]
        bound = {}
        for name, given in (spec.get("inputs") or {}).items():
            value = given.get("value", given.get("uri"))
            match = _BINDING.match(str(value))
            if match and match["input"]:
                parent = job_inputs.get(match["input"]) or {}
                value = parent.get("value", parent.get("uri"))
                if value in (None, ""):
                    problems.append(f"{node}.{name} (parent input {match['input']} has no value)")
            elif match and match["node"] not in body["jobs"]:
                problems.append(f"{node}.{name} (node {match['node']} is not in the job)")
            bound[name] = {"value": value}
        for name in unbound_inputs(bound, components.get(component, {})):
            problems.append(f"{node}.{name}")
    return problems


def echo_job(status: str = "NotStarted") -> Callable[[Sent], tuple]:
    """A PUT handler returning the submitted job back, as the service does; a job of
    the training pipeline component that leaves one of its inputs without a value is
    refused as the service refuses it (400 UserError naming the parameter)."""

    def answer(sent: Sent) -> tuple:
        name = sent.path.rsplit("/", 1)[-1]
        body = sent.json()["properties"]
        missing: list[str] = []
        if "/components/aml_trigger_training/" in (body.get("componentId") or ""):
            spec = yaml.safe_load(TRAINING_PIPELINE.read_text(encoding="utf-8"))["inputs"]
            missing = unbound_inputs(body.get("inputs") or {}, spec)
        elif body.get("jobs"):
            missing = unbound_node_inputs(body)
        if missing:
            return error(
                400,
                "UserError",
                f"Assignment for parameter {missing[0]} is not specified "
                f"(unbound: {', '.join(missing)})",
            )
        return (
            201,
            job_resource(
                name,
                status,
                body=body,
                properties=body.get("properties"),
                tags=body.get("tags"),
            ),
        )

    return answer


HISTORY = "https://westeurope.api.azureml.ms"


def child_run(node: str, status: str, start: str | None, end: str | None, **extra: Any) -> dict:
    """A pipeline node's child run as the run history service lists it."""
    run = {
        "runId": f"{node}-0b9e",
        "displayName": node,
        "status": status,
        "runType": "azureml.StepRun",
    }
    if start:
        run["startTimeUtc"] = start
    if end:
        run["endTimeUtc"] = end
    return {**run, **extra}


def run_history(fake: FakeAzure, children: dict[str, list[dict]]) -> None:
    """The run history service of the workspace: the workspace's discovery URL, the
    discovery document, and each pipeline job's child runs (`runs/{name}/children`)."""
    fake.on(
        "GET",
        rf"/workspaces/{WS}\?",
        (200, {"id": WS_PATH, "name": WS, "location": "westeurope",
               "properties": {"discoveryUrl": f"{HISTORY}/discovery"}}),
    )  # fmt: skip
    fake.on("GET", r"api\.azureml\.ms/discovery$", (200, {"api": HISTORY, "history": HISTORY}))
    for name, runs in children.items():
        fake.on("GET", rf"/history/v1\.0/.*/runs/{name}/children", (200, {"value": runs}))


def route_deployment_assets(fake: FakeAzure) -> str:
    """What deploying the steps' code to an online endpoint reads from the workspace:
    the workspace itself, the published aml-trigger-steps environment and the code
    snapshot already uploaded (so no upload leaves the machine). Returns the code id."""
    fake.on(
        "GET",
        rf"/workspaces/{WS}\?",
        (200, {"id": WS_PATH, "name": WS, "location": "westeurope", "properties": {}}),
    )
    env_id = f"{WS_PATH}/environments/aml-trigger-steps/versions/0.1.0-abc"
    fake.on(
        "GET",
        r"/environments/aml-trigger-steps/versions\?",
        (200, {"value": [{"id": env_id, "name": "0.1.0-abc", "properties": {"image": "x"}}]}),
    )
    code_id = f"{WS_PATH}/codes/steps-snapshot/versions/1"
    fake.on("GET", r"/codes/[^/]+/versions\?", (200, {"value": [{"id": code_id, "name": "1"}]}))
    fake.on(
        "GET",
        r"/codes/steps-snapshot/versions/1\?",
        (200, {"id": code_id, "name": "1", "properties": {"codeUri": "https://x/y"}}),
    )
    return code_id


def put_online_deployment(sent: Sent, deployments: dict[str, dict], **defaults: Any) -> tuple:
    """A PUT of an online deployment as Azure ML answers it once provisioned: kept in
    `deployments` by name, with the defaults the service fills in (scale settings, sku,
    and any other `defaults` of the properties)."""
    name = sent.path.rsplit("/", 1)[-1]
    body = sent.json()
    deployments[name] = body
    body["properties"]["provisioningState"] = "Succeeded"
    for key, value in {"scaleSettings": {"scaleType": "Default"}, **defaults}.items():
        body["properties"].setdefault(key, value)
    body.setdefault("sku", {"name": "Default", "capacity": 1})
    return (200, {"id": sent.path, "name": name, "location": "westeurope", **body})


@pytest.fixture
def fake_azure() -> FakeAzure:
    return FakeAzure()


@pytest.fixture
def fake_credential() -> FakeCredential:
    return FakeCredential()


@pytest.fixture
def ml_client(aml_env, fake_azure, fake_credential):
    """An MLClient of the real SDK whose every request goes to the wire fake."""
    from pipeline.aml_client import build_ml_client
    from pipeline.settings import Settings

    return build_ml_client(
        Settings.from_env(),
        credential=fake_credential,
        transport=fake_azure,
        retry_total=0,
        polling_interval=0,
    )


@pytest.fixture
def aml_env(home, monkeypatch, fake_azure) -> dict[str, str]:
    """App settings of a configured Azure ML backend (the workspace is fake, its
    pipeline component aml_trigger_training:3 published)."""
    route_published_pipeline(fake_azure)
    values = {
        "PIPELINE_BACKEND": "aml",
        "AML_SUBSCRIPTION_ID": SUB,
        "AML_RESOURCE_GROUP": RG,
        "AML_WORKSPACE": WS,
        "AML_PIPELINE_COMPONENT": "aml_trigger_training:3",
        "AML_COMPUTE": "cpu-cluster",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def wire():
    """The helpers above, for test modules (importlib mode cannot import conftest)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        error=error,
        job=job_resource,
        echo_job=echo_job,
        unbound_inputs=unbound_inputs,
        unbound_node_inputs=unbound_node_inputs,
        route_published_pipeline=route_published_pipeline,
        route_deployment_assets=route_deployment_assets,
        put_online_deployment=put_online_deployment,
        child_run=child_run,
        run_history=run_history,
        WS_PATH=WS_PATH,
        SUB=SUB,
        RG=RG,
        WS=WS,
    )


_PUBLISHED: dict[str, Any] = {}


def published_training_pipeline() -> dict:
    """The training pipeline component as `publish` registers it (its REST body, the
    nodes naming the step components it registered with them), published once per
    test session into a workspace of its own."""
    if not _PUBLISHED:
        from pipeline.publish import publish
        from pipeline.settings import Settings

        fake, registry = FakeAzure(), Registry()
        _route_workspace_assets(fake, registry)
        settings = Settings(
            pipeline_backend="aml",
            aml_subscription_id=SUB,
            aml_resource_group=RG,
            aml_workspace=WS,
        )
        result = publish(
            settings, credential=FakeCredential(), transport=fake, retry_total=0,
            progress=lambda _: None,
        )  # fmt: skip
        name, version = result.pipeline_component.split(":")
        _PUBLISHED.update(registry.assets[f"{WS_PATH}/components/{name}/versions/{version}"])
    return _PUBLISHED


def route_published_pipeline(fake: FakeAzure, version: str = "3") -> None:
    """GET of aml_trigger_training:<version> answers the published pipeline component."""
    path = f"{WS_PATH}/components/aml_trigger_training/versions/{version}"
    body = {**published_training_pipeline(), "id": path, "name": version}
    fake.on("GET", rf"/components/aml_trigger_training/versions/{version}\?", (200, body))
    fake.on(
        "GET",
        rf"/workspaces/{WS}\?",
        (200, {"id": WS_PATH, "name": WS, "location": "westeurope", "properties": {}}),
    )


@pytest.fixture
def make_submitter(aml_env, fake_azure, fake_credential):
    """make_submitter() -> an AmlSubmitter on the fake workspace, configured by the
    app settings as they are when called (a test may change them first): no retries,
    no backoff."""
    from pipeline.aml_submitter import AmlSubmitter
    from pipeline.settings import Settings

    def make():
        return AmlSubmitter(
            Settings.from_env(),
            credential=fake_credential,
            transport=fake_azure,
            retry_total=0,
            retry_backoff_factor=0,
        )

    return make


@pytest.fixture
def submitter(make_submitter):
    """An AmlSubmitter on the fake workspace, whose pipeline component
    aml_trigger_training:3 is published: no retries, no backoff, no polling."""
    return make_submitter()


# --- a workspace that stores what publish PUTs (test_publish, test_batch_pipeline) ---
class Registry:
    """Assets as the workspace stores them: PUT stores the body, GET returns it or 404."""

    def __init__(self) -> None:
        self.assets: dict[str, dict] = {}

    def put(self, sent):
        body = {"id": sent.path, "name": sent.path.rsplit("/", 1)[-1], **sent.json()}
        self.assets[sent.path] = body
        return (201, body)

    def get(self, sent):
        if sent.path in self.assets:
            return (200, self.assets[sent.path])
        return (404, {"error": {"code": "NotFound", "message": f"{sent.path} not found"}})


@pytest.fixture
def workspace(fake_azure, wire):
    """A workspace where nothing of ours is published yet, but whose blob store
    already holds this code snapshot (so no upload leaves the machine)."""
    return _route_workspace_assets(fake_azure, Registry())


def _route_workspace_assets(fake: FakeAzure, registry: Registry) -> str:
    code_id = f"{WS_PATH}/codes/4f1e-snapshot/versions/1"
    fake.on("GET", r"/(environments|components)/[^/]+/versions/[^/?]+\?", registry.get)
    fake.on("PUT", r"/(environments|components)/[^/]+/versions/", registry.put)
    fake.on(
        "GET",
        r"/codes/[^/]+/versions\?",
        (200, {"value": [{"id": code_id, "name": "1", "properties": {"codeUri": "x"}}]}),
    )
    fake.on(
        "GET",
        r"/codes/4f1e-snapshot/versions/1\?",
        (200, {"id": code_id, "name": "1", "properties": {"codeUri": "https://x/y"}}),
    )
    fake.on(
        "GET",
        rf"/workspaces/{WS}\?",
        (200, {"id": WS_PATH, "name": WS, "location": "westeurope", "properties": {}}),
    )
    return code_id
