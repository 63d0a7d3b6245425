"""integrations/data-factory/azuredeploy.json: the template evaluated offline, the
factory's JSON checked for what Data Factory would refuse, and both pipelines run on
a small emulator of the Data Factory engine (tests/ops/adf_emulator/).

The training pipeline calls the real local Functions host (function_app over a
socket) whose trigger service submits to the embedded backend running a two-step
quick pipeline (tests/ops/conftest.py): runs really start, complete or fail. The
scoring pipeline calls a stand-in for an Azure ML batch endpoint on 127.0.0.1 that
answers as the REST API does (bearer token required, inputs checked against the
deployed component, job status moving to an ending) since Azure is not reachable.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from pipeline.definition import PIPELINE_YAML
from triggers.validation import validate_training_request

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TEMPLATE = REPO / "integrations" / "data-factory" / "azuredeploy.json"
BATCH_PIPELINE = PIPELINE_YAML.with_name("batch_scoring_pipeline.yaml")


def _load(name: str, path: Path):
    """Loads a helper beside this file (tests/ops is not a package; pytest imports
    with importlib). A folder is loaded as a package, so its relative imports work."""
    if name not in sys.modules:
        package = path.is_dir()
        spec = importlib.util.spec_from_file_location(
            name,
            path / "__init__.py" if package else path,
            submodule_search_locations=[str(path)] if package else None,
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look the module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules[name]


arm = _load("aml_trigger_tests_arm_template", HERE / "arm_template.py")
adf = _load("aml_trigger_tests_adf_emulator", HERE / "adf_emulator")
schema = _load("aml_trigger_tests_adf_emulator.schema", HERE / "adf_emulator" / "schema.py")
FUNCTION_KEY, FAIL_SEED = "ops-test-function-key", 13  # see conftest.py

SCOPE = arm.Scope("11111111-2222-3333-4444-555555555555", "rg-data", "westeurope")
PARAMETERS = {
    "factoryName": "adf-aml-trigger",
    "functionAppUrl": "https://my-aml-trigger.azurewebsites.net",
    "keyVaultUrl": "https://kv-aml-trigger.vault.azure.net/",
    "incomingBlobEndpoint": "https://stamltrigger.blob.core.windows.net/",
    "batchEndpointUri": "https://scoring.westeurope.inference.ml.azure.com/jobs",
}
TRAIN, SCORE = "AmlTriggerTrainOnDrop", "AmlTriggerBatchScore"
ML_TOKEN = "token-for-ml.azure.com"


def _factory(template: dict | None = None, **overrides):
    deployment = arm.deploy(
        template or json.loads(TEMPLATE.read_text()), {**PARAMETERS, **overrides}, SCOPE
    )
    return adf.Factory.from_resources(deployment.resources), deployment


# --- structure ----------------------------------------------------------------------------
def test_template_deploys_a_factory_with_a_managed_identity_and_the_pieces_it_needs():
    factory, deployment = _factory()
    (resource,) = deployment.of_type("Microsoft.DataFactory/factories")
    assert resource.body["identity"] == {"type": "SystemAssigned"}
    assert set(factory.pipelines) == {TRAIN, SCORE}
    assert set(factory.linked_services) == {
        "AmlTriggerKeyVault",
        "AmlTriggerFunctionApp",
        "AmlTriggerIncomingStorage",
    }
    assert "principalId" in str(deployment.outputs["factoryPrincipalId"])
    # The function key is only ever a Key Vault reference: no value in the template.
    function_app = factory.linked_services["AmlTriggerFunctionApp"]["typeProperties"]
    assert function_app["functionKey"] == {
        "type": "AzureKeyVaultSecret",
        "store": {"referenceName": "AmlTriggerKeyVault", "type": "LinkedServiceReference"},
        "secretName": "aml-trigger-function-key",
    }
    assert "code=" not in TEMPLATE.read_text()


@pytest.mark.parametrize("pipeline", [TRAIN, SCORE])
def test_pipelines_pass_the_structural_checks(pipeline):
    factory, _ = _factory()
    assert adf.check_pipeline(pipeline, factory) == []


def test_linked_services_datasets_and_the_trigger_resolve():
    factory, _ = _factory()
    assert adf.check_factory(factory) == []


def _mutated(change) -> list[str]:
    template = json.loads(TEMPLATE.read_text())
    change(template)
    factory, _ = _factory(template)
    return adf.check_pipeline(TRAIN, factory) + adf.check_factory(factory)


def _train(template: dict) -> dict:
    return next(r for r in template["resources"] if r["name"].endswith(TRAIN + "')]"))


def _activity(template: dict, name: str) -> dict:
    pipeline = _train(template)["properties"]
    return next(a for a, _, _ in adf.nested(pipeline["activities"]) if a["name"] == name)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda t: _activity(t, "Start_training_run")["dependsOn"][0].update(
                activity="Wait_for_marker"
            ),
            "dependsOn Wait_for_marker is not a sibling",
        ),
        (
            lambda t: _activity(t, "Start_training_run")["dependsOn"][0].update(
                dependencyConditions=["Success"]
            ),
            "has conditions ['Success']",
        ),
        (
            lambda t: _activity(t, "Wait_for_drop_marker").update(
                dependsOn=[{"activity": "Start_training_run", "dependencyConditions": ["Failed"]}]
            ),
            "dependsOn cycle",
        ),
        (
            lambda t: _activity(t, "Start_training_run")["typeProperties"]["body"].update(
                data="@pipeline().parameters.dropPath"
            ),
            "pipeline().parameters.dropPath is not a parameter",
        ),
        (
            # The loop's own inner activity, read from outside the loop.
            lambda t: _activity(t, "Did_training_complete")["typeProperties"]["expression"].update(
                value="@equals(activity('Get_run_status').output.status, 'completed')"
            ),
            "reads activity('Get_run_status') which has not run before it",
        ),
        (
            lambda t: _activity(t, "Get_run_summary").update(dependsOn=[]),
            "reads activity('Start_training_run') which has not run before it",
        ),
        (
            lambda t: _activity(t, "Record_run_status")["typeProperties"].update(
                variableName="status"
            ),
            "sets undeclared variable status",
        ),
        (
            lambda t: t["resources"][2]["properties"]["typeProperties"]["functionKey"][
                "store"
            ].update(referenceName="AmlTriggerIncomingStorage"),
            "has no AzureKeyVault store",
        ),
        (
            lambda t: t["resources"][-1]["properties"]["pipelines"][0]["parameters"].pop(
                "dropFolder"
            ),
            "required parameter dropFolder",
        ),
    ],
)
def test_the_checks_catch_what_data_factory_would_refuse(change, expected):
    problems = _mutated(change)
    assert any(expected in p for p in problems), problems


def test_training_request_is_valid_and_carries_the_drift_policy():
    factory, _ = _factory()
    pipeline = factory.pipelines[TRAIN]
    params = {name: spec.get("defaultValue") for name, spec in pipeline["parameters"].items()}
    params["dropFolder"] = "drops/2026-12-01/"
    run = adf.PipelineRun(factory, TRAIN, params, run_id="r", env=None)
    body = run.evaluator.value(_start(factory)["typeProperties"]["body"])
    request = validate_training_request(body)
    assert request.retrain.retrain_policy == "on_drift"
    assert request.data == "drops/2026-12-01/" and request.tags["source"] == "data-factory"


def _start(factory) -> dict:
    acts = factory.pipelines[TRAIN]["activities"]
    return next(a for a in acts if a["name"] == "Start_training_run")


def test_web_calls_are_retried_except_the_batch_invoke_and_the_key_is_never_in_outputs():
    factory, _ = _factory()
    for name in (TRAIN, SCORE):
        for activity, _, _ in adf.nested(factory.pipelines[name]["activities"]):
            if activity["type"] not in ("AzureFunctionActivity", "WebActivity"):
                continue
            retry = activity["policy"]["retry"]
            if activity["name"] == "Start_batch_scoring":
                # A second POST to a batch endpoint is a second job: not retried.
                assert retry == 0
                assert activity["typeProperties"]["turnOffAsync"] is True
            else:
                assert retry >= 1, activity["name"]
    start = _start(factory)
    assert start["typeProperties"]["headers"]["Idempotency-Key"] == (
        "@concat('adf-', pipeline().RunId)"
    )


def test_schedule_trigger_trains_the_days_drop_only_on_drift():
    factory, _ = _factory()
    (trigger,) = factory.triggers.values()
    assert trigger["type"] == "ScheduleTrigger"
    (entry,) = trigger["pipelines"]
    scheduled = adf.Evaluator({"trigger": lambda: {"scheduledTime": "2026-12-03T03:00:00Z"}})
    parameters = scheduled.value(entry["parameters"])
    assert parameters["dropFolder"] == "drops/2026-12-03/"
    assert parameters["retrainPolicy"] == "on_drift"


def test_scoring_job_body_names_the_inputs_and_outputs_of_the_batch_component():
    factory, _ = _factory()
    component = yaml.safe_load(BATCH_PIPELINE.read_text())
    start = next(
        a for a in factory.pipelines[SCORE]["activities"] if a["name"] == "Start_batch_scoring"
    )
    props = start["typeProperties"]["body"]["properties"]
    assert set(props["InputData"]) <= set(component["inputs"])
    assert set(props["OutputData"]) == set(component["outputs"])
    required = {n for n, s in component["inputs"].items() if "default" not in s}
    required -= {n for n, s in component["inputs"].items() if s.get("optional")}
    assert required <= set(props["InputData"])
    assert start["typeProperties"]["authentication"] == {
        "type": "MSI",
        "resource": "https://ml.azure.com",
    }


# --- the training pipeline against the local host ----------------------------------------
DROP = "drops/2026-12-01/"


def _land_drop(home: Path, folder: str = DROP, *, marker: bool = True) -> None:
    path = home / "storage" / "incoming" / folder
    path.mkdir(parents=True, exist_ok=True)
    (path / "part-00000.csv").write_text("id,target\n1,0\n2,1\n")
    if marker:
        (path / "_SUCCESS").write_text("")


def _train_run(served, home, run_id="adf-run-0001", *, env_overrides=None, **parameters):
    factory, _ = _factory(functionAppUrl=served.url)
    env = adf.Environment(
        key_vault={"aml-trigger-function-key": FUNCTION_KEY},
        blob_root=home / "storage",
        time_scale=0.002,
        **(env_overrides or {}),
    )
    params = {"dropFolder": DROP, **parameters}
    return adf.PipelineRun(factory, TRAIN, params, run_id=run_id, env=env).run()


def test_a_run_that_completes_succeeds_the_pipeline_and_returns_its_summary(
    served, home, quick_submitter
):
    _land_drop(home)
    run = _train_run(served, home)
    assert run.status == "Succeeded", run.error
    (record,) = quick_submitter.list_runs()
    assert record.status == "completed"
    assert run.return_value["run_id"] == record.run_id
    assert run.return_value["run_url"].endswith(f"/api/runs/{record.run_id}")
    # What reached the service: the drop, the drift policy, the pipeline run's key.
    assert record.request["data"] == DROP
    assert record.request["retrain"]["retrain_policy"] == "on_drift"
    assert record.idempotency_key.endswith("adf-adf-run-0001")
    post = run.sent[0]
    assert post.method == "POST" and post.url == f"{served.url}/api/runs"
    assert "code=" not in post.url and post.headers["x-functions-key"] == FUNCTION_KEY
    # It polled the status route until the run ended, then read the summary once more.
    polls = [r for r in run.sent if r.url.endswith(f"/api/runs/{record.run_id}/status")]
    assert len(polls) >= 2


def test_a_run_that_fails_fails_the_pipeline_with_the_runs_error(served, home, quick_submitter):
    _land_drop(home)
    run = _train_run(served, home, trainingParams={"seed": FAIL_SEED})
    (record,) = quick_submitter.list_runs()
    assert record.status == "failed"
    assert run.status == "Failed"
    assert run.error["errorCode"] == "training_run_failed"
    assert record.run_id in run.error["message"]
    assert f"refused seed {FAIL_SEED}" in run.error["message"]
    assert run.error["target"] == "Fail_when_training_did_not_complete"
    assert run.return_value == {}


def test_a_retried_post_gets_the_same_run(served, home, quick_submitter):
    # The first POST is handled by the service but its answer is lost; policy.retry
    # sends it again with the same Idempotency-Key (the same pipeline run id).
    _land_drop(home)
    run = _train_run(served, home, env_overrides={"lose_answers": {"Start_training_run": 1}})
    assert run.status == "Succeeded", run.error
    posts = [r for r in run.sent if r.method == "POST"]
    assert len(posts) == 2
    assert posts[0].headers["Idempotency-Key"] == posts[1].headers["Idempotency-Key"]
    (start,) = [a for a in run.activity_runs if a.name == "Start_training_run"]
    assert start.attempts == 2 and start.status == "Succeeded"
    assert len(quick_submitter.list_runs()) == 1


def test_a_drop_without_its_marker_starts_nothing(served, home, quick_submitter):
    _land_drop(home, marker=False)
    factory, _ = _factory(functionAppUrl=served.url)
    env = adf.Environment(
        key_vault={"aml-trigger-function-key": FUNCTION_KEY},
        blob_root=home / "storage",
        time_scale=0.00002,  # the 12 h validation timeout in under a second
    )
    run = adf.PipelineRun(factory, TRAIN, {"dropFolder": DROP}, run_id="r2", env=env).run()
    assert run.status == "Failed" and run.error["errorCode"] == "ValidationTimedOut"
    assert run.sent == [] and quick_submitter.list_runs() == []


def test_a_refused_request_fails_the_pipeline_naming_the_field(served, home, quick_submitter):
    _land_drop(home)
    run = _train_run(served, home, retrainPolicy="sometimes")
    assert run.status == "Failed" and run.error["errorCode"] == "422"
    assert "retrain_policy" in run.error["message"]
    assert quick_submitter.list_runs() == []


def test_a_wrong_key_in_key_vault_fails_the_pipeline_with_401(served, home, quick_submitter):
    _land_drop(home)
    factory, _ = _factory(functionAppUrl=served.url)
    env = adf.Environment(
        key_vault={"aml-trigger-function-key": "not-the-key"},
        blob_root=home / "storage",
        time_scale=0.002,
    )
    run = adf.PipelineRun(factory, TRAIN, {"dropFolder": DROP}, run_id="r3", env=env).run()
    assert run.status == "Failed" and run.error["errorCode"] == "401"
    assert "not-the-key" not in json.dumps(run.error)
    assert quick_submitter.list_runs() == []


# --- the scoring pipeline against a stand-in batch endpoint ------------------------------
class BatchEndpoint:
    """Answers like an Azure ML batch endpoint's /jobs API: a bearer token is required,
    a job's inputs and outputs must be those of the deployed pipeline component
    (400 otherwise), and a job's status moves through `statuses` as it is polled."""

    def __init__(self, statuses: list[str]) -> None:
        component = yaml.safe_load(BATCH_PIPELINE.read_text())
        self.inputs, self.outputs = set(component["inputs"]), set(component["outputs"])
        self.statuses = list(statuses)
        self.jobs: dict[str, dict] = {}
        self.invocations: list[dict] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _answer(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {ML_TOKEN}":
                    self._answer(401, {"error": {"code": "Unauthorized", "message": "No token"}})
                    return False
                return True

            def do_POST(self):  # noqa: N802
                if not self._authorized():
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self._answer(*endpoint.invoke(body, dict(self.headers)))

            def do_GET(self):  # noqa: N802
                if not self._authorized():
                    return
                self._answer(*endpoint.status(self.path.rsplit("/", 1)[-1]))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_port}/jobs"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def invoke(self, body: dict, headers: dict) -> tuple[int, dict]:
        props = body.get("properties", {})
        unknown = (set(props.get("InputData", {})) - self.inputs) | (
            set(props.get("OutputData", {})) - self.outputs
        )
        if unknown or "scoring_data" not in props.get("InputData", {}):
            message = f"inputs/outputs not in the deployment: {sorted(unknown)}"
            return 400, {"error": {"code": "UserError", "message": message}}
        name = f"batchjob-{len(self.jobs) + 1}"
        self.invocations.append({"body": body, "headers": headers})
        self.jobs[name] = {
            "id": f"/subscriptions/s/resourceGroups/rg/providers/"
            f"Microsoft.MachineLearningServices/workspaces/ws/jobs/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/batchEndpoints/jobs",
            "properties": {"status": "NotStarted", "jobType": "Pipeline"},
        }
        return 200, self.jobs[name]

    def status(self, name: str) -> tuple[int, dict]:
        if name not in self.jobs:
            return 404, {"error": {"code": "NotFound", "message": f"job {name}"}}
        job = copy.deepcopy(self.jobs[name])
        if self.statuses:
            job["properties"]["status"] = self.statuses.pop(0)
            self.jobs[name] = job
        return 200, job

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def batch_endpoint():
    endpoints: list[BatchEndpoint] = []

    def make(statuses):
        endpoints.append(BatchEndpoint(statuses))
        return endpoints[-1]

    yield make
    for endpoint in endpoints:
        endpoint.close()


def _score_run(endpoint, tmp_path, folder="new/2026-12-01/"):
    factory, _ = _factory(batchEndpointUri=endpoint.uri)
    _land_drop(tmp_path, folder)
    env = adf.Environment(
        key_vault={},
        blob_root=tmp_path / "storage",
        tokens={"https://ml.azure.com": ML_TOKEN},
        time_scale=0.001,
    )
    return adf.PipelineRun(factory, SCORE, {"scoringFolder": folder}, run_id="adf-s1", env=env)


def test_scoring_pipeline_returns_where_the_predictions_are(batch_endpoint, tmp_path):
    endpoint = batch_endpoint(["Running", "Running", "Completed"])
    run = _score_run(endpoint, tmp_path).run()
    assert run.status == "Succeeded", run.error
    (invocation,) = endpoint.invocations
    assert invocation["headers"]["azureml-model-deployment"] == "batch-scoring"
    inputs = invocation["body"]["properties"]["InputData"]
    assert inputs["scoring_data"] == {
        "JobInputType": "UriFolder",
        "Uri": "azureml://datastores/incoming/paths/new/2026-12-01/",
    }
    assert inputs["model_name"] == {"JobInputType": "Literal", "Value": "porto-seguro-lgbm"}
    predictions = "azureml://datastores/incoming/paths/new/2026-12-01/_predictions/adf-s1/"
    assert invocation["body"]["properties"]["OutputData"]["predictions"]["Uri"] == predictions
    assert run.return_value == {"predictions": predictions, "job_name": "batchjob-1"}
    polls = [r for r in run.sent if r.method == "GET"]
    assert len(polls) == 3 and all(r.url == f"{endpoint.uri}/batchjob-1" for r in polls)


def test_a_failed_scoring_job_fails_the_pipeline(batch_endpoint, tmp_path):
    endpoint = batch_endpoint(["Running", "Failed"])
    run = _score_run(endpoint, tmp_path).run()
    assert run.status == "Failed"
    assert run.error["errorCode"] == "batch_scoring_Failed"
    assert "batchjob-1" in run.error["message"]
    assert run.return_value == {}
    assert len(endpoint.invocations) == 1


def test_a_web_activity_with_the_async_pattern_waits_on_the_status_route(
    served, home, quick_submitter
):
    # docs/data-factory.md: a hand-built Web activity (async pattern on, the default)
    # also works against POST /api/runs when its key is in the URL: the service puts
    # the same ?code= into Location, and ADF re-sends no header when it follows it.
    pipeline = {
        "parameters": {"base": {"type": "string"}, "key": {"type": "string"}},
        "activities": [
            {
                "name": "Train_and_wait",
                "type": "WebActivity",
                "policy": {"retry": 0},
                "typeProperties": {
                    "method": "POST",
                    "url": "@concat(pipeline().parameters.base, '/api/runs?code=', "
                    "pipeline().parameters.key)",
                    "headers": {
                        "Content-Type": "application/json",
                        "Idempotency-Key": "@concat('adf-', pipeline().RunId)",
                    },
                    "body": {"data": "drops/", "deploy_target": "none"},
                },
            }
        ],
    }
    factory = adf.Factory({}, {}, {"Hand_built": pipeline}, {})
    assert adf.check_pipeline("Hand_built", factory) == []
    env = adf.Environment(key_vault={}, blob_root=home / "storage", time_scale=0.002)
    params = {"base": served.url, "key": FUNCTION_KEY}
    run = adf.PipelineRun(factory, "Hand_built", params, run_id="r4", env=env).run()
    assert run.status == "Succeeded", run.error
    (record,) = quick_submitter.list_runs()
    assert run.outputs["Train_and_wait"]["status"] == "completed"
    assert run.outputs["Train_and_wait"]["run_id"] == record.run_id
    polls = run.sent[1:]
    assert polls and all(p.method == "GET" and "/status?code=" in p.url for p in polls)
    assert all("Idempotency-Key" not in p.headers for p in polls)


# --- the JSON against the Data Factory REST API's models ---------------------------------
def _api_problems(deployment) -> list[str]:
    problems = []
    for resource in deployment.resources:
        root = schema.ROOTS.get(resource.type.split("/")[-1].lower())
        if root is not None:
            problems += schema.unknown_properties(resource.properties, root, resource.name)
    return problems


def test_every_property_is_one_the_data_factory_api_defines():
    _, deployment = _factory()
    assert sum(1 for r in deployment.resources if r.type.count("/") == 2) == 7  # all checked
    assert _api_problems(deployment) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda t: _activity(t, "Get_run_status")["typeProperties"].update(functionNam="x"),
            "functionNam: not a property of AzureFunctionActivityTypeProperties",
        ),
        (
            lambda t: _activity(t, "Start_training_run")["policy"].update(retries=3),
            "retries: not a property of ActivityPolicy",
        ),
        (
            lambda t: _activity(t, "Return_run_summary")["typeProperties"].update(
                setSystemVariabl=True
            ),
            "setSystemVariabl: not a property of SetVariableActivityTypeProperties",
        ),
        (
            lambda t: _activity(t, "Wait_for_drop_marker").update(type="Validate"),
            "type 'Validate' is not a Activity type",
        ),
        (
            lambda t: t["resources"][2]["properties"]["typeProperties"]["functionKey"].update(
                secret="x"
            ),
            "secret: not a property of AzureKeyVaultSecretReference",
        ),
        (
            lambda t: t["resources"][-1]["properties"]["typeProperties"]["recurrence"][
                "schedule"
            ].update(hour=[3]),
            "hour: not a property of RecurrenceSchedule",
        ),
    ],
)
def test_a_property_the_api_does_not_define_is_caught(change, expected):
    template = json.loads(TEMPLATE.read_text())
    change(template)
    _, deployment = _factory(template)
    problems = _api_problems(deployment)
    assert any(expected in p for p in problems), problems
