"""integrations/logic-apps/train-and-wait.workflow.json: its structure, and the workflow
run against the local host by a small emulator of the Logic Apps engine.

The workflow definition language's JSON schema is not available from a package
registry here, and Azure is not reachable, so this is not a validation by Azure: the
emulator implements only what the workflow uses (Http with the asynchronous pattern,
If, Compose, Terminate; the expression functions parameters, body, workflow and
coalesce) and fails on anything else, so a change to the workflow that it cannot
check fails here instead of passing unnoticed."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

import function_app
from pipeline.settings import Settings
from triggers import runtime
from triggers.host.local_host import LocalHost
from triggers.validation import validate_training_request

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "integrations" / "logic-apps" / "train-and-wait.workflow.json"
KEY = "workflow-test-key"


def _definition() -> dict[str, Any]:
    return json.loads(WORKFLOW.read_text())["definition"]


# --- structure ----------------------------------------------------------------------------
def test_definition_language_header_and_parameters():
    definition = _definition()
    assert definition["$schema"].endswith("/schemas/2016-06-01/workflowdefinition.json#")
    params = definition["parameters"]
    assert params["functionKey"]["type"] == "SecureString"
    # No value for the URL or the key ships in the file: the user supplies them.
    assert "defaultValue" not in params["functionKey"]
    assert "defaultValue" not in params["functionAppUrl"]
    request = validate_training_request(params["trainingRequest"]["defaultValue"])
    assert request.dry_run is False and request.tags == {"source": "logic-app"}
    (trigger,) = definition["triggers"].values()
    assert trigger["type"] == "Recurrence"


def _actions(actions: dict[str, Any]):
    for name, action in actions.items():
        yield name, action, actions
        for nested in (action.get("actions"), (action.get("else") or {}).get("actions")):
            if nested:
                yield from _actions(nested)


def test_http_actions_keep_the_async_pattern_and_hide_the_key():
    text = WORKFLOW.read_text()
    http = {n: a for n, a, _ in _actions(_definition()["actions"]) if a["type"] == "Http"}
    assert set(http) == {"Start_training_run", "Wait_for_run"}
    for name, action in http.items():
        # "DisableAsyncPattern" would hand back the first 202 instead of waiting.
        assert "DisableAsyncPattern" not in action.get("operationOptions", ""), name
        assert action["inputs"]["queries"] == {"code": "@parameters('functionKey')"}, name
        assert "inputs" in action["runtimeConfiguration"]["secureData"]["properties"], name
    assert text.count("functionKey") == 3  # the declaration and the two queries


def test_run_after_names_existing_siblings():
    for name, action, siblings in _actions(_definition()["actions"]):
        for previous, states in action.get("runAfter", {}).items():
            assert previous in siblings and previous != name, (name, previous)
            assert set(states) <= {"Succeeded", "Failed", "Skipped", "TimedOut"}


# --- an emulator of the parts of the engine the workflow uses ----------------------------
class Unsupported(AssertionError):
    pass


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<name>[A-Za-z_]\w*)|(?P<op>\?\[|[()\[\],\]]))"
)


class _Expression:
    """Parses and evaluates `name(args)` calls with `['x']` / `?['x']` accessors."""

    def __init__(self, text: str, functions: dict[str, Any]) -> None:
        self.tokens = [m for m in _TOKEN.finditer(text)]
        if "".join(m.group(0) for m in self.tokens).strip() != text.strip():
            raise Unsupported(f"expression not understood: {text!r}")
        self.pos, self.functions = 0, functions

    def value(self):
        result = self._primary()
        if self.pos != len(self.tokens):
            raise Unsupported("trailing tokens")
        return result

    def _next(self):
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def _peek(self, op: str) -> bool:
        return self.pos < len(self.tokens) and self.tokens[self.pos].group("op") == op

    def _primary(self):
        token = self._next()
        if token.group("str"):
            result = token.group("str")[1:-1].replace("''", "'")
        elif token.group("name"):
            name = token.group("name")
            if name not in self.functions:
                raise Unsupported(f"function {name}() is not emulated")
            assert self._next().group("op") == "("
            args = []
            while not self._peek(")"):
                args.append(self._primary())
                if self._peek(","):
                    self._next()
            self._next()
            result = self.functions[name](*args)
        else:
            raise Unsupported(f"unexpected {token.group(0)!r}")
        while self._peek("[") or self._peek("?["):
            optional = self._next().group("op") == "?["
            key = self._primary()
            assert self._next().group("op") == "]"
            if result is None and optional:
                continue
            result = result.get(key) if optional else result[key]
        return result


class WorkflowRun:
    def __init__(self, definition, parameters, *, run_name: str, on_poll=lambda: None):
        self.definition = definition
        self.parameters = {
            name: parameters.get(name, spec.get("defaultValue"))
            for name, spec in definition["parameters"].items()
        }
        self.run_name = run_name
        self.on_poll = on_poll
        self.outputs: dict[str, dict[str, Any]] = {}
        self.states: dict[str, str] = {}
        self.sent: list[requests.PreparedRequest] = []
        self.status = "Succeeded"
        self.error: dict[str, Any] | None = None

    # expressions
    def evaluate(self, value):
        if isinstance(value, dict):
            return {k: self.evaluate(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.evaluate(v) for v in value]
        if not isinstance(value, str) or "@" not in value:
            return value
        if value.startswith("@") and not value.startswith("@{"):
            return self._expression(value[1:])
        return re.sub(r"@\{([^}]*)\}", lambda m: str(self._expression(m.group(1))), value)

    def _expression(self, text: str):
        functions = {
            "parameters": lambda name: self.parameters[name],
            "body": lambda name: self.outputs[name]["body"],
            "workflow": lambda: {"run": {"name": self.run_name}},
            "coalesce": lambda *values: next((v for v in values if v is not None), None),
        }
        return _Expression(text, functions).value()

    # actions
    def run(self) -> WorkflowRun:
        self._run_scope(self.definition["actions"])
        return self

    def _run_scope(self, actions: dict[str, Any]) -> None:
        pending = dict(actions)
        while pending and self.status != "Terminated":
            ready = [
                n
                for n, a in pending.items()
                if all(p in self.states for p in a.get("runAfter", {}))
            ]
            assert ready, f"runAfter cycle among {sorted(pending)}"
            for name in ready:
                action = pending.pop(name)
                wanted = action.get("runAfter", {})
                if all(self.states[p] in states for p, states in wanted.items()):
                    self.states[name] = self._run_action(name, action)
                else:
                    self.states[name] = "Skipped"
                if self.states[name] == "Failed":
                    self.status = "Failed"

    def _run_action(self, name: str, action: dict[str, Any]) -> str:
        kind = action["type"]
        if kind == "Http":
            return self._http(name, action)
        if kind == "Compose":
            self.outputs[name] = {"body": self.evaluate(action["inputs"])}
            return "Succeeded"
        if kind == "If":
            branch = self._condition(action["expression"])
            scope = action["actions"] if branch else action.get("else", {}).get("actions", {})
            self._run_scope(scope)
            return "Succeeded"
        if kind == "Terminate":
            inputs = self.evaluate(action["inputs"])
            self.status, self.error = "Terminated", inputs.get("runError")
            self.final = inputs["runStatus"]
            return "Succeeded"
        raise Unsupported(f"action type {kind} is not emulated")

    def _condition(self, expression: dict[str, Any]) -> bool:
        (operator, operands), *rest = expression.items()
        assert not rest
        if operator == "and":
            return all(self._condition(e) for e in operands)
        if operator == "equals":
            left, right = (self.evaluate(v) for v in operands)
            return left == right
        raise Unsupported(f"condition {operator} is not emulated")

    def _http(self, name: str, action: dict[str, Any]) -> str:
        inputs = self.evaluate(action["inputs"])
        assert "DisableAsyncPattern" not in action.get("operationOptions", "")
        body = inputs.get("body")
        request = requests.Request(
            inputs["method"],
            inputs["uri"],
            params=inputs.get("queries"),
            headers=inputs.get("headers"),
            data=json.dumps(body) if body is not None else None,
        ).prepare()
        self.sent.append(request)
        with requests.Session() as session:
            response = session.send(request, timeout=10)
            # The asynchronous pattern: a bare GET of Location (the action's headers
            # are not re-sent) after Retry-After seconds, scaled down here.
            while response.status_code == 202:
                self.on_poll()
                time.sleep(int(response.headers.get("Retry-After", "20")) * 0.001)
                response = session.get(response.headers["Location"], timeout=10)
        self.outputs[name] = {
            "statusCode": response.status_code,
            "headers": dict(response.headers),
            "body": response.json(),
        }
        return "Succeeded" if 200 <= response.status_code < 300 else "Failed"


# --- the workflow against the local host --------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def host(home, make_service):
    local = LocalHost(
        function_app.app,
        Settings.from_env({"AML_TRIGGER_HOME": str(home)}),
        port=_free_port(),
        key=KEY,
        watch_blobs=False,
        run_timers=False,
    )
    local.start(service=make_service(STATUS_RETRY_AFTER_SECONDS="5"))
    yield local
    local.stop()
    runtime.reset()


def _pipeline(fake_submitter, ending: str, **fields):
    """Moves the one run on: running after the first poll, `ending` after the second."""
    polls = []

    def on_poll() -> None:
        polls.append(1)
        (run_id,) = fake_submitter.runs
        if len(polls) == 1:
            fake_submitter.finish(run_id, "running")
        elif len(polls) == 2:
            fake_submitter.finish(run_id, ending, **fields)

    return on_poll


def _run(host, fake_submitter, ending, run_name="08584000000000000000000000000CU01", **fields):
    parameters = {"functionAppUrl": host.url, "functionKey": KEY}
    on_poll = _pipeline(fake_submitter, ending, **fields)
    return WorkflowRun(_definition(), parameters, run_name=run_name, on_poll=on_poll).run()


def test_completed_run_ends_the_workflow_with_its_summary(host, fake_submitter):
    fields = {
        "model_version": "4",
        "endpoint": "https://pe.westeurope.inference.ml.azure.com/score",
        "metrics": {"gini": 0.29},
        "gate": {"decision": "promote", "reasons": []},
    }
    run = _run(host, fake_submitter, "completed", **fields)
    assert run.status == "Succeeded" and run.states["Run_summary"] == "Succeeded"
    summary = run.outputs["Run_summary"]["body"]
    (run_id,) = fake_submitter.runs
    assert summary["run_id"] == run_id and summary["model_version"] == "4"
    assert summary["endpoint"] == fields["endpoint"] and summary["metrics"] == {"gini": 0.29}
    assert summary["gate_decision"] == "promote"
    # What the first call sent: a TrainingRequest POSTed to /api/runs, key as ?code=.
    post = run.sent[0]
    assert post.method == "POST" and urlsplit(post.url).path == "/api/runs"
    assert parse_qs(urlsplit(post.url).query) == {"code": [KEY]}
    assert post.headers["Idempotency-Key"] == "logic-app-08584000000000000000000000000CU01"
    sent = validate_training_request(json.loads(post.body))
    assert (
        sent.model_dump()
        == validate_training_request(
            _definition()["parameters"]["trainingRequest"]["defaultValue"]
        ).model_dump()
    )
    assert fake_submitter.submissions == [run_id]


@pytest.mark.parametrize("ending", ["failed", "canceled"])
def test_a_run_that_did_not_complete_fails_the_workflow_run(host, fake_submitter, ending):
    run = _run(host, fake_submitter, ending, error="step evaluate failed: no test rows")
    (run_id,) = fake_submitter.runs
    assert run.status == "Terminated" and run.final == "Failed"
    assert run.error["code"] == f"training_run_{ending}"
    assert run_id in run.error["message"] and "no test rows" in run.error["message"]
    assert run.states["Wait_for_run"] == "Succeeded"  # the status call itself succeeded


def test_a_rerun_with_the_same_run_name_waits_for_the_existing_training_run(host, fake_submitter):
    # The engine's retry of the POST (same run name, same Idempotency-Key) gets
    # 200 + the unfinished run, which it does not poll; Wait_for_run then does.
    name = "08584000000000000000000000000CU02"
    key = f"logic-app-{name}"
    first = requests.post(
        f"{host.url}/api/runs",
        params={"code": KEY},
        json=_definition()["parameters"]["trainingRequest"]["defaultValue"],
        headers={"Idempotency-Key": key},
        timeout=10,
    )
    assert first.status_code == 202
    run = _run(host, fake_submitter, "completed", run_name=name, model_version="9")
    assert run.outputs["Start_training_run"]["statusCode"] == 200
    assert run.outputs["Start_training_run"]["body"]["status"] == "queued"
    assert run.status == "Succeeded"
    assert run.outputs["Run_summary"]["body"]["model_version"] == "9"
    assert len(fake_submitter.submissions) == 1
