"""A small emulator of the Azure Data Factory engine, for integrations/data-factory/.

Data Factory cannot be installed or reached here, so the tests run the shipped
pipelines on this emulator instead. It implements only what those pipelines use and
fails loudly (Unsupported) on anything else, so a change to a pipeline that it cannot
check fails a test instead of passing unnoticed. What it follows, from Microsoft Learn:

- Expressions ("Expressions and functions in Azure Data Factory"): a JSON string
  value starting with `@` is an expression, `@@` escapes it, `@{...}` interpolates
  into a string, and `{"value": "@...", "type": "Expression"}` is an expression
  object. Functions: pipeline(), activity(), variables(), dataset(), trigger(),
  concat, equals, not, or, coalesce, last, split, formatDateTime (yyyy-MM-dd only).
  A property that does not exist fails the activity, as in ADF.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

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


class Unsupported(AssertionError):
    """Something the emulator does not implement: the test must fail, not guess."""


class ActivityError(Exception):
    def __init__(self, message: str, code: str = "ActivityFailed") -> None:
        super().__init__(message)
        self.code, self.message = code, message


# --- expressions ---------------------------------------------------------------------------
_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+)|(?P<name>[A-Za-z_]\w*)|(?P<op>[()\[\],.]))"
)


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple


@dataclass(frozen=True)
class Member:
    base: Any
    key: Any  # a str for .name / ['name'], an int for [0]


@dataclass(frozen=True)
class Literal:
    value: Any


def parse(text: str):
    """Parses one expression body (without the leading @) into Call/Member/Literal."""
    tokens = list(_TOKEN.finditer(text))
    if "".join(t.group(0) for t in tokens).strip() != text.strip():
        raise Unsupported(f"expression not understood: {text!r}")
    pos = 0

    def peek(op: str) -> bool:
        return pos < len(tokens) and tokens[pos].group("op") == op

    def take(op: str | None = None):
        nonlocal pos
        if pos >= len(tokens):
            raise Unsupported(f"expression ends early: {text!r}")
        token = tokens[pos]
        if op is not None and token.group("op") != op:
            raise Unsupported(f"expected {op!r} in {text!r}")
        pos += 1
        return token

    def primary():
        token = take()
        if token.group("str") is not None:
            node = Literal(token.group("str")[1:-1].replace("''", "'"))
        elif token.group("num") is not None:
            node = Literal(int(token.group("num")))
        elif token.group("name") in ("true", "false", "null") and not peek("("):
            node = Literal({"true": True, "false": False, "null": None}[token.group("name")])
        elif token.group("name"):
            take("(")
            args = []
            while not peek(")"):
                args.append(primary())
                if peek(","):
                    take(",")
            take(")")
            node = Call(token.group("name"), tuple(args))
        else:
            raise Unsupported(f"unexpected {token.group(0)!r} in {text!r}")
        while peek(".") or peek("["):
            if take().group("op") == ".":
                node = Member(node, take().group("name"))
            else:
                key = primary()
                take("]")
                if not isinstance(key, Literal):
                    raise Unsupported(f"computed index in {text!r}")
                node = Member(node, key.value)
        return node

    node = primary()
    if pos != len(tokens):
        raise Unsupported(f"trailing tokens in {text!r}")
    return node


def expressions_in(value: Any) -> Iterator[str]:
    """Every expression body inside a JSON value, as ADF finds them."""
    if isinstance(value, dict):
        for item in value.values():
            yield from expressions_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from expressions_in(item)
    elif isinstance(value, str) and not value.startswith("@@"):
        if value.startswith("@") and not value.startswith("@{"):
            yield value[1:]
        else:
            yield from re.findall(r"@\{([^}]*)\}", value)


def walk(node) -> Iterator[Any]:
    yield node
    if isinstance(node, Call):
        for arg in node.args:
            yield from walk(arg)
    elif isinstance(node, Member):
        yield from walk(node.base)


def references(text: str) -> Iterator[tuple[str, str]]:
    """(kind, name) for each pipeline parameter, variable, activity and dataset parameter
    an expression reads: ('parameter', X) for pipeline().parameters.X, and so on."""
    for node in walk(parse(text)):
        if isinstance(node, Call) and node.name in ("activity", "variables"):
            (arg,) = node.args
            if not isinstance(arg, Literal):
                raise Unsupported(f"{node.name}() with a computed name in {text!r}")
            yield ("activity" if node.name == "activity" else "variable", arg.value)
        if isinstance(node, Member) and isinstance(node.base, Member):
            inner = node.base
            if isinstance(inner.base, Call) and inner.key == "parameters":
                kind = {"pipeline": "parameter", "dataset": None}.get(inner.base.name)
                if kind:
                    yield (kind, node.key)
        if isinstance(node, Member) and isinstance(node.base, Call) and node.base.name == "dataset":
            yield ("dataset_parameter", node.key)


def _concat(*values):
    if any(v is None for v in values):
        raise ActivityError("concat() was given a null value", "InvalidTemplate")
    return "".join(v if isinstance(v, str) else json.dumps(v) for v in values)


def _format_datetime(value: str, fmt: str) -> str:
    if fmt != "yyyy-MM-dd":
        raise Unsupported(f"formatDateTime format {fmt!r} is not emulated")
    return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d")


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "concat": _concat,
    "equals": lambda a, b: a == b,
    "not": lambda a: not a,
    "or": lambda a, b: bool(a or b),
    "coalesce": lambda *v: next((x for x in v if x is not None), None),
    "last": lambda v: v[-1],
    "split": lambda s, sep: s.split(sep),
    "formatDateTime": _format_datetime,
}


class Evaluator:
    """Evaluates expressions against a context of system functions (pipeline(),
    activity(), variables(), dataset(), trigger())."""

    def __init__(self, system: dict[str, Callable[..., Any]]) -> None:
        self.system = system

    def value(self, node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"value", "type"} and node["type"] == "Expression":
                return self.value(node["value"])
            return {k: self.value(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self.value(v) for v in node]
        if not isinstance(node, str) or "@" not in node:
            return node
        if node.startswith("@@"):
            return node[1:]
        if node.startswith("@") and not node.startswith("@{"):
            return self.expression(node[1:])
        return re.sub(r"@\{([^}]*)\}", lambda m: _text(self.expression(m.group(1))), node)

    def expression(self, text: str) -> Any:
        return self._eval(parse(text), text)

    def _eval(self, node, text: str) -> Any:
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Member):
            base = self._eval(node.base, text)
            try:
                return base[node.key]
            except (KeyError, IndexError, TypeError):
                raise ActivityError(
                    f"The expression '{text}' cannot be evaluated because property "
                    f"'{node.key}' doesn't exist.",
                    "InvalidTemplate",
                ) from None
        args = [self._eval(a, text) for a in node.args]
        if node.name in self.system:
            return self.system[node.name](*args)
        if node.name in FUNCTIONS:
            return FUNCTIONS[node.name](*args)
        raise Unsupported(f"function {node.name}() is not emulated")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


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


# --- structure -----------------------------------------------------------------------------
def nested(
    activities: list[dict], container: str | None = None
) -> Iterator[tuple[dict, list[dict], str | None]]:
    """(activity, its sibling list, the name of the container it is in) for every activity."""
    for activity in activities:
        yield activity, activities, container
        for key in CONTAINERS.get(activity["type"], ()):
            yield from nested(activity["typeProperties"].get(key, []), activity["name"])


def check_pipeline(name: str, factory: Factory) -> list[str]:
    """What Data Factory (or a reader) would refuse in a pipeline: duplicate names, a
    dependsOn on no sibling or with a bad condition, cycles, unknown activity types, an
    expression reading an undefined parameter or variable, or an activity's output that
    has not run before it, and references to undefined linked services or datasets."""
    pipeline = factory.pipelines[name]
    problems: list[str] = []
    everything = list(nested(pipeline["activities"]))
    names = [a["name"] for a, _, _ in everything]
    problems += [
        f"{name}: activity name {n} is used twice" for n in {n for n in names if names.count(n) > 1}
    ]
    parent = {a["name"]: container for a, _, container in everything}
    by_name = {a["name"]: a for a, _, _ in everything}

    for activity, siblings, _ in everything:
        where = f"{name}.{activity['name']}"
        if activity["type"] not in ACTIVITY_TYPES:
            problems.append(f"{where}: type {activity['type']} is not one the emulator runs")
        sibling_names = {s["name"] for s in siblings}
        for dep in activity.get("dependsOn", []):
            if dep["activity"] not in sibling_names or dep["activity"] == activity["name"]:
                problems.append(f"{where}: dependsOn {dep['activity']} is not a sibling activity")
            bad = set(dep.get("dependencyConditions", [])) - DEPENDENCY_CONDITIONS
            if bad or not dep.get("dependencyConditions"):
                problems.append(
                    f"{where}: dependsOn {dep['activity']} has conditions {sorted(bad) or 'none'}"
                )
    for activity, siblings, _ in everything:
        if _in_cycle(activity["name"], {s["name"]: s for s in siblings}):
            problems.append(f"{name}.{activity['name']}: dependsOn cycle")
    if problems:
        return problems

    def upstream(activity_name: str) -> set[str]:
        """The activities whose output this one may read: its dependsOn closure among
        siblings, and the same for each container it is in. What is nested inside an
        ancestor is not an ancestor (ADF: "The output of activity 'X' can't be
        referenced since it is either not an ancestor to the current activity or does
        not exist")."""
        seen: set[str] = set()
        current: str | None = activity_name
        while current is not None:
            stack = [d["activity"] for d in by_name[current].get("dependsOn", [])]
            while stack:
                dep = stack.pop()
                if dep not in seen:
                    seen.add(dep)
                    stack.extend(d["activity"] for d in by_name[dep].get("dependsOn", []))
            current = parent[current]
        return seen

    declared_vars = set(pipeline.get("variables", {}))
    declared_params = set(pipeline.get("parameters", {}))
    for activity, _, _ in everything:
        where = f"{name}.{activity['name']}"
        visible = upstream(activity["name"])
        own = {k: v for k, v in activity.items() if k not in CONTAINERS.get(activity["type"], ())}
        props = activity.get("typeProperties", {})
        own_props = {
            k: v for k, v in props.items() if k not in CONTAINERS.get(activity["type"], ())
        }
        if activity["type"] == "Until":
            # The loop's expression is evaluated after each pass: it may read the inner activities.
            visible = visible | {n for n, _ in _descendants(activity)}
        for text in expressions_in({**own, "typeProperties": own_props}):
            for kind, ref in references(text):
                if kind == "parameter" and ref not in declared_params:
                    problems.append(f"{where}: pipeline().parameters.{ref} is not a parameter")
                elif kind == "variable" and ref not in declared_vars:
                    problems.append(f"{where}: variables('{ref}') is not declared")
                elif kind == "activity" and ref not in visible:
                    problems.append(f"{where}: reads activity('{ref}') which has not run before it")
        if activity["type"] == "SetVariable":
            var = props["variableName"]
            if props.get("setSystemVariable") and var != "pipelineReturnValue":
                problems.append(f"{where}: system variable {var} does not exist")
            elif not props.get("setSystemVariable") and var not in declared_vars:
                problems.append(f"{where}: sets undeclared variable {var}")
        for ref in _refs(activity, "LinkedServiceReference"):
            if ref not in factory.linked_services:
                problems.append(f"{where}: linked service {ref} is not defined")
        for ref in _refs(activity, "DatasetReference"):
            if ref not in factory.datasets:
                problems.append(f"{where}: dataset {ref} is not defined")
    return problems


def check_factory(factory: Factory) -> list[str]:
    """Linked services, datasets and triggers: every reference resolves, Key Vault
    secrets are read through an AzureKeyVault linked service, dataset expressions read
    declared dataset parameters, triggers pass declared pipeline parameters."""
    problems: list[str] = []
    for name, service in factory.linked_services.items():
        for secret in _find(service, lambda v: v.get("type") == "AzureKeyVaultSecret"):
            store = secret.get("store", {}).get("referenceName")
            if factory.linked_services.get(store, {}).get("type") != "AzureKeyVault":
                secret_name = secret.get("secretName")
                problems.append(
                    f"{name}: secret {secret_name} has no AzureKeyVault store ({store})"
                )
    for name, dataset in factory.datasets.items():
        store = dataset["linkedServiceName"]["referenceName"]
        if store not in factory.linked_services:
            problems.append(f"{name}: linked service {store} is not defined")
        for text in expressions_in(dataset["typeProperties"]):
            for kind, ref in references(text):
                if kind != "dataset_parameter" or ref not in dataset.get("parameters", {}):
                    problems.append(
                        f"{name}: expression reads {kind} {ref}, not a dataset parameter"
                    )
    for pipeline in factory.pipelines.values():
        for activity, _, _ in nested(pipeline["activities"]):
            ref = activity.get("typeProperties", {}).get("dataset")
            if ref and ref["referenceName"] in factory.datasets:
                wanted = set(factory.datasets[ref["referenceName"]].get("parameters", {}))
                given = sorted(ref.get("parameters", {}))
                if set(given) != wanted:
                    problems.append(
                        f"{activity['name']}: dataset parameters {given} != {sorted(wanted)}"
                    )
    for name, trigger in factory.triggers.items():
        for entry in trigger["pipelines"]:
            target = entry["pipelineReference"]["referenceName"]
            if target not in factory.pipelines:
                problems.append(f"{name}: pipeline {target} is not defined")
                continue
            declared = factory.pipelines[target].get("parameters", {})
            given = entry.get("parameters", {})
            problems += [
                f"{name}: {p} is not a parameter of {target}" for p in set(given) - set(declared)
            ]
            problems += [
                f"{name}: required parameter {p} of {target} is not given"
                for p, spec in declared.items()
                if "defaultValue" not in spec and p not in given
            ]
    return problems


def _descendants(activity: dict) -> Iterator[tuple[str, dict]]:
    for key in CONTAINERS.get(activity["type"], ()):
        for inner, _, _ in nested(activity["typeProperties"].get(key, [])):
            yield inner["name"], inner


def _in_cycle(start: str, siblings: dict[str, dict]) -> bool:
    stack, seen = [d["activity"] for d in siblings[start].get("dependsOn", [])], set()
    while stack:
        current = stack.pop()
        if current == start:
            return True
        if current in seen or current not in siblings:
            continue
        seen.add(current)
        stack.extend(d["activity"] for d in siblings[current].get("dependsOn", []))
    return False


def _find(value: Any, predicate) -> Iterator[dict]:
    if isinstance(value, dict):
        if predicate(value):
            yield value
        for item in value.values():
            yield from _find(item, predicate)
    elif isinstance(value, list):
        for item in value:
            yield from _find(item, predicate)


def _refs(activity: dict, kind: str) -> Iterator[str]:
    own = {k: v for k, v in activity.items() if k != "typeProperties"}
    props = {
        k: v
        for k, v in activity.get("typeProperties", {}).items()
        if k not in CONTAINERS.get(activity["type"], ())
    }
    for ref in _find({**own, **props}, lambda v: v.get("type") == kind):
        yield ref["referenceName"]
