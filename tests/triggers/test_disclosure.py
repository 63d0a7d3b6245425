"""What answers disclose, over a real socket against the local host: a dry run is its
documented DryRunPlan, errors carry no server path, and a callback_url's query string
(often a token) is never shown, though the callback still goes to the whole URL."""

from __future__ import annotations

import json

import jsonschema
import pytest
import requests

from pipeline.runs import StepRecord
from pipeline.settings import Settings
from triggers import runtime
from triggers.disclosure import Disclosure, shown_callback_url
from triggers.monitor import RunMonitor
from triggers.openapi import openapi_document

KEY = "disclosure-test-key"
SECRET = "sig=s3cr3t-token"


@pytest.fixture
def host(start_host, service):
    return start_host(service, key=KEY)


def api(host, method, path, **kwargs):
    return requests.request(
        method, f"{host.url}/api/{path}", headers={"x-functions-key": KEY}, timeout=10, **kwargs
    )


def conforms(instance, schema_name: str) -> None:
    """`instance` is valid against the published schema (OpenAPI 3.1 = JSON Schema 2020-12)."""
    components = openapi_document()["components"]
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": components}
    jsonschema.Draft202012Validator(schema).validate(instance)


# --- the dry run --------------------------------------------------------------------------
def test_dry_run_answers_its_documented_plan_without_paths_or_commands(home, start_host):
    service = runtime.build_service(Settings.from_env({"AML_TRIGGER_HOME": str(home)}))
    local = start_host(service, key=KEY)  # the real local submitter's describe()
    body = {"dry_run": True, "data": "drops/a/", "callback_url": f"https://h.example/cb?{SECRET}"}
    response = api(local, "POST", "runs", json=body)
    assert response.status_code == 200
    plan = response.json()
    conforms(plan, "DryRunPlan")
    assert plan["dry_run"] is True and plan["backend"] == "local"
    assert [s["name"] for s in plan["steps"]][:2] == ["prep", "check_drift"]
    assert plan["inputs"]["training_data"] == "storage/incoming/drops/a"
    assert plan["request"]["callback_url"] == "https://h.example/cb"
    text = response.text
    assert str(home) not in text and "command" not in text and "steps.prep" not in text
    assert SECRET not in text
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())


def test_post_runs_200_documents_both_a_repeat_and_a_dry_run():
    post = openapi_document()["paths"]["/runs"]["post"]["responses"]["200"]
    refs = {s["$ref"] for s in post["content"]["application/json"]["schema"]["anyOf"]}
    assert refs == {"#/components/schemas/RunRecord", "#/components/schemas/DryRunPlan"}


# --- errors and paths ---------------------------------------------------------------------
def test_a_failed_runs_errors_show_paths_relative_to_the_home(host, home, fake_submitter):
    run_id = api(host, "POST", "runs", json={}).json()["run_id"]
    fake_submitter.finish(
        run_id,
        "failed",
        error=f"prep: prepared data: {home}/runs/{run_id}/prep/out does not exist",
        steps=[StepRecord(name="prep", status="failed", log_path=f"{home}/runs/{run_id}/prep.log",
                          error="FileNotFoundError: '/usr/lib/python3/x/secret.py'")],
    )  # fmt: skip
    shown = api(host, "GET", f"runs/{run_id}").json()
    assert shown["error"] == f"prep: prepared data: runs/{run_id}/prep/out does not exist"
    assert shown["steps"][0]["log_path"] == f"runs/{run_id}/prep.log"
    assert shown["steps"][0]["error"] == "FileNotFoundError: 'secret.py'"
    listed = api(host, "GET", "runs").text
    summary = api(host, "GET", f"runs/{run_id}/status")
    assert summary.status_code == 200 and summary.json()["error"] == shown["error"]
    for text in (listed, summary.text):
        assert str(home) not in text and "/usr/lib" not in text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("see /HOME/runs/r/log", "see runs/r/log"),
        ("/HOME", "."),
        ("https://h.example/a/b and http://127.0.0.1:7071/api/runs/r", None),
        ("drops/2026-11-22/part.csv, 2026/11/22", None),
        ("'/opt/elsewhere/file.py', line 3", "'file.py', line 3"),
        ("azureml://datastores/x/paths/y/", None),
    ],
)
def test_paths_are_relative_to_the_home_and_urls_untouched(text, shown):
    disclosure = Disclosure("/HOME")
    assert disclosure.text(text) == (text if shown is None else shown)


def test_a_home_with_spaces_is_still_made_relative():
    disclosure = Disclosure("/Users/Jo Doe/.local")
    text = "data: /Users/Jo Doe/.local/storage/incoming/my drop does not exist"
    assert disclosure.text(text) == "data: storage/incoming/my drop does not exist"
    # A sibling whose name starts like the home is not inside it.
    assert disclosure.text("/Users/Jo Doe/.localother/x") == "Jo Doe/.localother/x"


# --- callback URLs ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://h.example/cb?sig=x&sp=y", "https://h.example/cb"),
        ("https://h.example:8443/a/b#frag", "https://h.example:8443/a/b"),
        ("https://[2001:db8::1]/x?code=k", "https://[2001:db8::1]/x"),
    ],
)
def test_a_callback_url_is_shown_as_scheme_host_and_path(url, shown):
    assert shown_callback_url(url) == shown


def test_callback_query_is_kept_server_side_and_delivered_whole(host, home, service,
                                                                fake_submitter,
                                                                callback_server):  # fmt: skip
    receiver = callback_server()
    url = f"{receiver.url}?{SECRET}"
    accepted = api(host, "POST", "runs", json={"callback_url": url})
    run_id = accepted.json()["run_id"]
    assert accepted.status_code == 202
    assert accepted.json()["request"]["callback_url"] == receiver.url
    assert api(host, "GET", f"runs/{run_id}").json()["request"]["callback_url"] == receiver.url
    assert SECRET not in api(host, "GET", "runs").text
    assert SECRET not in api(host, "GET", f"runs/{run_id}/status").text
    fake_submitter.finish(run_id, "failed", error=f"worker: {home}/runs/{run_id}/worker.log")
    RunMonitor(service).tick()
    [(path, payload)] = receiver.received
    assert path == f"/hook?{SECRET}"  # the receiver gets its token
    assert payload["error"] == f"worker: runs/{run_id}/worker.log"
    assert str(home) not in json.dumps(payload)


@pytest.mark.parametrize(
    "description",
    [
        {"backend": "aml", "mode": "pipeline_job", "run_id": "run-a", "experiment": "e",
         "nodes": ["prep", "train"],
         "job_yaml": "name: run-a\ninputs:\n  training_data: azureml://datastores/d/paths/x/\n"},
        {"backend": "aml", "mode": "pipeline_job", "run_id": "run-a", "experiment": "e",
         "nodes": ["prep", "check_drift"], "nodes_after_retrain_decision": ["train", "evaluate"],
         "job_yaml": "name: run-a\n"},
        {"backend": "aml", "mode": "pipeline_job", "run_id": "run-a", "experiment": "e",
         "job_yaml": "name: run-a-c1\n",
         "jobs": [{"name": "run-a-c1", "compute": "c1", "job_yaml": "name: run-a-c1\n"},
                  {"name": "run-a-c2", "compute": "c2", "job_yaml": "name: run-a-c2\n"}]},
        {"backend": "aml", "mode": "pipeline_job", "kind": "verify", "run_id": "run-a",
         "experiment": "e", "job_yaml": "name: run-a\n"},
        {"backend": "aml", "mode": "batch_endpoint", "run_id": "run-a", "endpoint": "ep",
         "deployment": "blue", "inputs": {"training_data": "azureml://datastores/d/paths/x/"}},
    ],
)  # fmt: skip
def test_an_azure_ml_dry_run_plan_conforms_and_keeps_the_job_yaml(description):
    from triggers.dry_run import plan

    compute = "c1" if description.get("kind") == "verify" else ["c1"]
    request = {"experiment": "e", "compute": compute, "callback_url": f"https://h/cb?{SECRET}"}
    shown = plan(description, request=request, disclosure=Disclosure("/HOME")).model_dump(
        mode="json"
    )
    conforms(shown, "DryRunPlan")
    assert shown["mode"] == description["mode"] and SECRET not in json.dumps(shown)
    yamls = [j["job_yaml"] for j in description.get("jobs", [])] or [description.get("job_yaml")]
    assert [j["job_yaml"] for j in shown["jobs"]] == ([] if yamls == [None] else yamls)
    assert all(j["compute"] == "c1" for j in shown["jobs"][:1])
    assert shown["nodes"] == description.get("nodes", [])
    # A drift probe's plan says what starts only if the probe decides to retrain.
    assert shown["nodes_after_retrain_decision"] == description.get("nodes_after_retrain_decision")


def test_a_refused_callback_delivery_names_the_url_without_its_token():
    from triggers.notify import CallbackNotifier

    notifier = CallbackNotifier(local=False, resolve=lambda host, port: ["10.0.0.7"])
    delivery = notifier.send(f"http://hooks.example/cb?{SECRET}", {"run_id": "run-x"})
    assert not delivery.ok and "'http://hooks.example/cb'" in delivery.error
    assert SECRET not in delivery.error  # it is logged and kept in the ledger
