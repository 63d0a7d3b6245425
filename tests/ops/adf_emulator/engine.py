"""Pipeline runs on a small emulator of the Azure Data Factory engine.

Data Factory cannot be installed or reached here, so the tests run the shipped
pipelines on this emulator instead. It implements only what those pipelines use and
fails loudly (Unsupported) on anything else, so a change to a pipeline that it cannot
check fails a test instead of passing unnoticed. What it follows, from Microsoft Learn:

- Expressions: expressions.py.
- dependsOn ("Pipelines and activities"): an activity runs when each dependency ended
  in one of its conditions (Succeeded, Failed, Skipped, Completed), else it is Skipped.
- policy.retry / retryIntervalInSeconds: a failed attempt is repeated.
- Validation: polls the dataset's file every `sleep` seconds until it exists or
  `timeout` ("Validation activity").
- AzureFunctionActivity ("Azure Function activity"): `<functionAppUrl>/api/<functionName>`
  with the linked service's key; the answer must be a JSON object ("Response Content is
  not a valid JObject" otherwise); a 202 is returned as is, not followed (the page says
  to poll a Durable Functions 202 with a Web activity). How ADF sends the key on the
  wire is not documented; the emulator sends `x-functions-key`, which the Functions host
  accepts like `?code=`.
- WebActivity ("Web activity"): MSI authentication adds a bearer token for `resource`;
  unless `turnOffAsync` is true, a 202 with Location is followed with GETs until a
  non-202 answer. Headers other than the authentication are not re-sent on those GETs
  (not documented either way).
- Until ("Until activity"): do-until; the expression is evaluated after each pass; an
  inner activity's failure does not stop the loop; `timeout` ends it as failed.
- Wait, SetVariable (and the `pipelineReturnValue` system variable), IfCondition, Fail
  (its errorCode and message become the run's error).

Not implemented: secureInput/secureOutput (there is no run history here),
httpRequestTimeout (every local call answers at once), concurrency between
independent activities (they run one after another), ADF's full rules for a
pipeline's status (here: failed when any top-level activity failed), activity-level
`timeout` policies, Validation's minimumSize/childItems, integration runtimes, datasets
other than a Binary blob file, and every activity or function not listed above.
Durations are multiplied by `time_scale` so that hours of waiting take milliseconds.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from .expressions import ActivityError, Evaluator, Unsupported

DEPENDENCY_CONDITIONS = {"Succeeded", "Failed", "Skipped", "Completed"}
CONTAINERS = {"Until": ("activities",), "IfCondition": ("ifTrueActivities", "ifFalseActivities")}
ACTIVITY_TYPES = {
    "Validation",
    "AzureFunctionActivity",
    "WebActivity",
    "Until",
    "Wait",
    "SetVariable",
    "IfCondition",
    "Fail",
}


# --- the factory and its runs --------------------------------------------------------------
@dataclass
class Factory:
    """Linked services, datasets, pipelines and triggers by name (ADF's JSON `properties`)."""

    linked_services: dict[str, dict]
    datasets: dict[str, dict]
    pipelines: dict[str, dict]
    triggers: dict[str, dict]

    @classmethod
    def from_resources(cls, resources) -> Factory:
        kinds = {"linkedservices": {}, "datasets": {}, "pipelines": {}, "triggers": {}}
        for resource in resources:
            kind = resource.type.split("/")[-1].lower()
            if kind in kinds:
                kinds[kind][resource.name.split("/")[-1]] = resource.properties
        return cls(
            kinds["linkedservices"], kinds["datasets"], kinds["pipelines"], kinds["triggers"]
        )


@dataclass
class Environment:
    """What the factory's linked services stand for on this machine."""

    key_vault: dict[str, str]  # secrets of the vault the AzureKeyVault linked service names
    blob_root: Path  # the account of the AzureBlobStorage linked service: one folder per container
    tokens: dict[str, str] = field(default_factory=dict)  # MSI resource -> bearer token
    time_scale: float = 0.001
    # Activity name -> how many of its answers are lost after the server handled them
    # (as when a gateway times out): those attempts fail and policy.retry repeats them.
    lose_answers: dict[str, int] = field(default_factory=dict)


@dataclass
class ActivityRun:
    name: str
    type: str
    status: str
    attempts: int = 1
    error: dict[str, str] | None = None


class PipelineRun:
    def __init__(
        self,
        factory: Factory,
        pipeline: str,
        parameters: dict[str, Any],
        *,
        run_id: str,
        env: Environment,
    ) -> None:
        self.factory, self.env, self.run_id, self.name = factory, env, run_id, pipeline
        self.definition = factory.pipelines[pipeline]
        declared = self.definition.get("parameters", {})
        unknown = set(parameters) - set(declared)
        if unknown:
            raise ValueError(f"parameters not declared by {pipeline}: {sorted(unknown)}")
        self.parameters = {}
        for name, spec in declared.items():
            if name not in parameters and "defaultValue" not in spec:
                raise ValueError(f"{pipeline}: parameter {name} is required")
            self.parameters[name] = parameters.get(name, spec.get("defaultValue"))
        self.variables = {
            n: s.get("defaultValue") for n, s in self.definition.get("variables", {}).items()
        }
        self.outputs: dict[str, Any] = {}
        self.activity_runs: list[ActivityRun] = []
        self.sent: list[requests.PreparedRequest] = []
        self.return_value: dict[str, Any] = {}
        self.status = "InProgress"
        self.error: dict[str, str] | None = None
        self.evaluator = Evaluator(
            {
                "pipeline": lambda: {
                    "parameters": self.parameters,
                    "RunId": self.run_id,
                    "Pipeline": self.name,
                },
                "activity": self._activity,
                "variables": lambda name: self.variables[name],
            }
        )

    def _activity(self, name: str) -> dict[str, Any]:
        if name not in self.outputs:
            raise ActivityError(f"activity '{name}' has no output (not run)", "InvalidTemplate")
        return {"output": self.outputs[name]}

    # scopes -----------------------------------------------------------------------------
    def run(self) -> PipelineRun:
        states = self._run_scope(self.definition["activities"])
        failed = [r for r in self.activity_runs if r.status == "Failed" and r.name in states]
        self.status = "Failed" if "Failed" in states.values() else "Succeeded"
        if self.status == "Failed" and self.error is None and failed:
            self.error = failed[-1].error
        return self

    def _run_scope(self, activities: list[dict]) -> dict[str, str]:
        states: dict[str, str] = {}
        pending = {a["name"]: a for a in activities}
        while pending:
            ready = [
                a
                for a in pending.values()
                if all(d["activity"] in states for d in a.get("dependsOn", []))
            ]
            if not ready:
                raise Unsupported(f"dependsOn cycle or unknown activity among {sorted(pending)}")
            for activity in ready:
                del pending[activity["name"]]
                if all(
                    _met(states[d["activity"]], d["dependencyConditions"])
                    for d in activity.get("dependsOn", [])
                ):
                    states[activity["name"]] = self._run_with_policy(activity)
                else:
                    states[activity["name"]] = "Skipped"
                    self.activity_runs.append(
                        ActivityRun(activity["name"], activity["type"], "Skipped", 0)
                    )
        return states

    def _run_with_policy(self, activity: dict) -> str:
        policy = activity.get("policy", {})
        retries = int(policy.get("retry", 0))
        record = ActivityRun(activity["name"], activity["type"], "InProgress", 0)
        self.activity_runs.append(record)
        for attempt in range(retries + 1):
            record.attempts = attempt + 1
            try:
                self._run_activity(activity)
            except ActivityError as failure:
                record.status = "Failed"
                record.error = {
                    "errorCode": failure.code,
                    "message": failure.message,
                    "target": activity["name"],
                }
                if activity["type"] == "Fail":
                    self.error = record.error
                    return "Failed"
                if attempt < retries:
                    self._sleep(int(policy.get("retryIntervalInSeconds", 30)))
                continue
            record.status, record.error = "Succeeded", None
            return "Succeeded"
        return "Failed"

    def _run_activity(self, activity: dict) -> None:
        kind = activity["type"]
        props = activity.get("typeProperties", {})
        if kind not in ACTIVITY_TYPES:
            raise Unsupported(f"activity type {kind} is not emulated")
        if kind == "Wait":
            self._sleep(int(self.evaluator.value(props["waitTimeInSeconds"])))
        elif kind == "SetVariable":
            self._set_variable(props)
        elif kind == "Fail":
            raise ActivityError(
                self.evaluator.value(props["message"]), self.evaluator.value(props["errorCode"])
            )
        elif kind == "IfCondition":
            branch = self.evaluator.value(props["expression"])
            if not isinstance(branch, bool):
                raise ActivityError(f"If Condition expression gave {branch!r}, not a boolean")
            scope = props.get("ifTrueActivities" if branch else "ifFalseActivities", [])
            inner = self._run_scope(scope)
            if "Failed" in inner.values():
                failed = next(r for r in reversed(self.activity_runs) if r.status == "Failed")
                raise ActivityError(failed.error["message"], failed.error["errorCode"])
        elif kind == "Until":
            self._until(activity["name"], props)
        elif kind == "Validation":
            self._validation(props)
        elif kind == "AzureFunctionActivity":
            self.outputs[activity["name"]] = self._azure_function(activity)
        elif kind == "WebActivity":
            self.outputs[activity["name"]] = self._web(activity)

    def _set_variable(self, props: dict) -> None:
        name = props["variableName"]
        if props.get("setSystemVariable"):
            if name != "pipelineReturnValue":
                raise Unsupported(f"system variable {name}")
            for item in props["value"]:
                content = item["value"]
                value = content["content"]
                self.return_value[item["key"]] = (
                    self.evaluator.value(value) if content["type"] == "Expression" else value
                )
            return
        if name not in self.variables:
            raise ActivityError(f"variable {name} is not declared")
        self.variables[name] = self.evaluator.value(props["value"])

    def _until(self, name: str, props: dict) -> None:
        deadline = (
            time.monotonic() + _duration(props.get("timeout", "7.00:00:00")) * self.env.time_scale
        )
        while True:
            self._run_scope(props["activities"])  # an inner failure does not stop the loop
            if self.evaluator.value(props["expression"]) is True:
                return
            if time.monotonic() > deadline:
                raise ActivityError(f"Until activity {name} timed out", "ActivityTimedOut")

    def _validation(self, props: dict) -> None:
        if "minimumSize" in props or "childItems" in props:
            raise Unsupported("Validation minimumSize/childItems")
        ref = props["dataset"]
        dataset = self.factory.datasets[ref["referenceName"]]
        given = self.evaluator.value(ref.get("parameters", {}))
        location = Evaluator({"dataset": lambda: given}).value(
            dataset["typeProperties"]["location"]
        )
        if location["type"] != "AzureBlobStorageLocation":
            raise Unsupported(f"dataset location {location['type']}")
        path = (
            self.env.blob_root
            / location["container"]
            / location["folderPath"]
            / location["fileName"]
        )
        deadline = (
            time.monotonic() + _duration(props.get("timeout", "0.12:00:00")) * self.env.time_scale
        )
        while not path.is_file():
            if time.monotonic() > deadline:
                raise ActivityError(
                    f"Validation timed out: {location['container']}/{location['folderPath']}"
                    f"{location['fileName']} does not exist",
                    "ValidationTimedOut",
                )
            self._sleep(int(props.get("sleep", 10)))

    # HTTP -------------------------------------------------------------------------------
    def _azure_function(self, activity: dict) -> Any:
        service = self._linked_service(activity["linkedServiceName"], "AzureFunction")
        base = service["functionAppUrl"]
        key = self._secret(service["functionKey"])
        props = self.evaluator.value(activity["typeProperties"])
        if props["method"] not in ("GET", "POST", "PUT"):
            raise ActivityError(f"method {props['method']} is not supported by the activity")
        headers = {**props.get("headers", {}), "x-functions-key": key}
        url = f"{base.rstrip('/')}/api/{props['functionName']}"
        response = self._send(activity["name"], props["method"], url, headers, props.get("body"))
        return _json_object(response)

    def _web(self, activity: dict) -> Any:
        props = self.evaluator.value(activity["typeProperties"])
        auth = props.get("authentication")
        auth_headers = {}
        if auth is not None:
            if auth["type"] != "MSI":
                raise Unsupported(f"authentication {auth['type']}")
            if auth["resource"] not in self.env.tokens:
                raise Unsupported(f"no managed-identity token for {auth['resource']}")
            auth_headers["Authorization"] = f"Bearer {self.env.tokens[auth['resource']]}"
        url = props["url"]
        headers = {**props.get("headers", {}), **auth_headers}
        response = self._send(activity["name"], props["method"], url, headers, props.get("body"))
        while response.status_code == 202 and not props.get("turnOffAsync", False):
            location = response.headers.get("Location")
            if not location:
                break
            self._sleep(int(response.headers.get("Retry-After", "20")))
            response = self._send(activity["name"], "GET", location, auth_headers, None)
        return _json_object(response)

    def _send(self, name, method, url, headers, body) -> requests.Response:
        request = requests.Request(
            method, url, headers=headers, data=None if body is None else json.dumps(body)
        ).prepare()
        self.sent.append(request)
        try:
            with requests.Session() as session:
                response = session.send(request, timeout=10)
        except requests.RequestException as failure:
            raise ActivityError(f"{method} {url} failed: {failure}") from None
        if self.env.lose_answers.get(name, 0) > 0:
            self.env.lose_answers[name] -= 1
            raise ActivityError(f"{method} {url}: no answer within the request timeout")
        if not 200 <= response.status_code < 300:
            raise ActivityError(
                f"{method} {url} answered {response.status_code}: {response.text}",
                str(response.status_code),
            )
        return response

    def _linked_service(self, ref: dict, kind: str) -> dict:
        service = self.factory.linked_services[ref["referenceName"]]
        if service["type"] != kind:
            raise ActivityError(
                f"linked service {ref['referenceName']} is {service['type']}, not {kind}"
            )
        return service["typeProperties"]

    def _secret(self, value: Any) -> str:
        if isinstance(value, dict) and value.get("type") == "AzureKeyVaultSecret":
            self._linked_service(value["store"], "AzureKeyVault")
            try:
                return self.env.key_vault[value["secretName"]]
            except KeyError:
                raise ActivityError(f"Key Vault has no secret {value['secretName']}") from None
        raise Unsupported("a secret not in Key Vault")

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds * self.env.time_scale)


def _met(state: str, conditions: list[str]) -> bool:
    return any(
        state == c or (c == "Completed" and state in ("Succeeded", "Failed")) for c in conditions
    )


def _json_object(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ActivityError("Response Content is not a valid JObject.")
    return body


def _duration(text: str) -> float:
    """ADF timespans: d.hh:mm:ss or hh:mm:ss."""
    match = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})", text)
    if not match:
        raise Unsupported(f"timespan {text!r}")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds
