"""An offline evaluator for ARM deployment templates: what a deployment would send.

The Bicep compiler and Azure Resource Manager cannot be installed or reached here, so
the tests evaluate infra/azuredeploy.json the way Resource Manager does before it
creates anything: parameters are checked against their declared type, bounds and
allowed values; every `[expression]` is parsed and evaluated; variables (with copy
loops), conditions and nested deployments (inner scope, other resource groups) are
resolved; `dependsOn` must name resources of the same template. The result is the
list of resources with their evaluated properties.

What only exists at deploy time (reference(), list*()) evaluates to a `Runtime`
value that records the call, so a test can check *which* key or property a setting
is built from without any secret existing. Unknown functions, wrong argument counts,
undefined parameters or variables raise TemplateError naming the spot.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TOP_LEVEL_KEYS = {
    "$schema",
    "contentVersion",
    "apiProfile",
    "metadata",
    "parameters",
    "variables",
    "functions",
    "resources",
    "outputs",
}
PARAMETER_TYPES = {"string", "securestring", "int", "bool", "object", "secureObject", "array"}
API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")


class TemplateError(ValueError):
    """The template would be rejected; the message names where and why."""


@dataclass(frozen=True)
class Runtime:
    """A value only Resource Manager knows at deploy time, e.g.
    `listKeys(<id>, 2023-05-01).keys[0].value`."""

    expr: str

    def get(self, key: Any) -> Runtime:
        return Runtime(f"{self.expr}[{key}]" if isinstance(key, int) else f"{self.expr}.{key}")

    def __str__(self) -> str:
        return "{{" + self.expr + "}}"


@dataclass
class Resource:
    type: str
    name: str
    id: str
    api_version: str
    body: dict[str, Any]
    subscription_id: str
    resource_group: str
    depends_on: list[str] = field(default_factory=list)

    @property
    def properties(self) -> dict[str, Any]:
        return self.body.get("properties", {})


@dataclass
class Deployment:
    resources: list[Resource]
    outputs: dict[str, Any]

    def of_type(self, type_: str) -> list[Resource]:
        return [r for r in self.resources if r.type.lower() == type_.lower()]

    def one(self, type_: str) -> Resource:
        found = self.of_type(type_)
        if len(found) != 1:
            raise AssertionError(f"expected one {type_}, found {len(found)}")
        return found[0]


# --- expression parsing ----------------------------------------------------------------------
_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<punct>[().,\[\]]))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise TemplateError(f"cannot parse expression at {text[pos : pos + 30]!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


@dataclass
class _Call:
    name: str
    args: list[Any]


@dataclass
class _Access:
    target: Any
    key: Any  # str for `.name`, a node for `[expr]`


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def parse(self):
        node = self.expr()
        if self.i != len(self.toks):
            raise TemplateError(f"unexpected {self.toks[self.i][1]!r} in [{self.text}]")
        return node

    def peek(self, value: str) -> bool:
        return self.i < len(self.toks) and self.toks[self.i][1] == value

    def take(self, value: str | None = None) -> tuple[str, str]:
        if self.i >= len(self.toks):
            raise TemplateError(f"expression ends early: [{self.text}]")
        tok = self.toks[self.i]
        if value is not None and tok[1] != value:
            raise TemplateError(f"expected {value!r}, got {tok[1]!r} in [{self.text}]")
        self.i += 1
        return tok

    def expr(self):
        kind, value = self.take()
        if kind == "str":
            node: Any = value[1:-1].replace("''", "'")
        elif kind == "num":
            node = int(value)
        elif kind == "name":
            self.take("(")
            args = []
            while not self.peek(")"):
                args.append(self.expr())
                if not self.peek(")"):
                    self.take(",")
            self.take(")")
            node = _Call(value, args)
        else:
            raise TemplateError(f"unexpected {value!r} in [{self.text}]")
        while self.peek(".") or self.peek("["):
            if self.take()[1] == ".":
                node = _Access(node, self.take()[1])
            else:
                node = _Access(node, self.expr())
                self.take("]")
        return node


# --- evaluation ------------------------------------------------------------------------------
@dataclass
class Scope:
    subscription_id: str
    resource_group: str
    location: str
    tenant_id: str = "00000000-0000-0000-0000-0000000000aa"


def _resource_id(scope: Scope, args: list[Any], *, subscription_level: bool = False) -> str:
    args = [str(a) for a in args]
    type_at = next((i for i, a in enumerate(args) if "/" in a), None)
    if type_at is None:
        raise TemplateError(f"resourceId: no resource type among {args}")
    sub, rg = scope.subscription_id, scope.resource_group
    prefix = args[:type_at]
    if subscription_level:
        if prefix:
            sub = prefix[0]
    elif len(prefix) == 2:
        sub, rg = prefix
    elif len(prefix) == 1:
        rg = prefix[0]
    type_parts = args[type_at].split("/")
    names = args[type_at + 1 :]
    if len(names) != len(type_parts) - 1:
        raise TemplateError(f"resourceId: {args[type_at]} needs {len(type_parts) - 1} names")
    path = (
        type_parts[0]
        + "/"
        + "/".join(f"{t}/{n}" for t, n in zip(type_parts[1:], names, strict=True))
    )
    base = f"/subscriptions/{sub}"
    if not subscription_level:
        base += f"/resourceGroups/{rg}"
    return f"{base}/providers/{path}"


def _unique_string(*args: Any) -> str:
    digest = hashlib.sha256("|".join(map(str, args)).encode()).digest()
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "".join(alphabet[b % 32] for b in digest[:13])


def _format(fmt: str, *args: Any) -> str:
    def sub(m: re.Match) -> str:
        index = int(m.group(1))
        if index >= len(args):
            raise TemplateError(f"format: {{{index}}} has no argument in {fmt!r}")
        return _text(args[index])

    return re.sub(r"\{(\d+)\}", sub, fmt)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


# name -> (min args, max args or None)
_ARITY = {
    "parameters": (1, 1),
    "variables": (1, 1),
    "resourceId": (2, None),
    "subscriptionResourceId": (2, None),
    "resourceGroup": (0, 0),
    "subscription": (0, 0),
    "environment": (0, 0),
    "uniqueString": (1, None),
    "guid": (1, None),
    "format": (1, None),
    "concat": (1, None),
    "toLower": (1, 1),
    "take": (2, 2),
    "reference": (1, 3),
    "listKeys": (2, 2),
    "createArray": (0, None),
    "createObject": (0, None),
    "union": (1, None),
    "items": (1, 1),
    "length": (1, 1),
    "copyIndex": (0, 2),
    "string": (1, 1),
    "if": (3, 3),
    "equals": (2, 2),
    "not": (1, 1),
    "empty": (1, 1),
}


class Evaluator:
    def __init__(self, template: dict, parameters: dict[str, Any], scope: Scope, where: str):
        self.template = template
        self.scope = scope
        self.where = where
        self.copy_index: dict[str, int] = {}
        self._check_top_level()
        self.params = self._bind_parameters(parameters)
        self._variables: dict[str, Any] = {}
        self._evaluating: set[str] = set()

    # parameters and variables ------------------------------------------------------------
    def _check_top_level(self) -> None:
        unknown = set(self.template) - TOP_LEVEL_KEYS
        if unknown:
            raise TemplateError(f"{self.where}: unknown top-level keys {sorted(unknown)}")
        for key in ("$schema", "contentVersion", "resources"):
            if key not in self.template:
                raise TemplateError(f"{self.where}: missing {key}")

    def _bind_parameters(self, given: dict[str, Any]) -> dict[str, Any]:
        declared = self.template.get("parameters", {})
        extra = set(given) - set(declared)
        if extra:
            raise TemplateError(f"{self.where}: parameters not declared: {sorted(extra)}")
        bound: dict[str, Any] = {}
        for name, spec in declared.items():
            kind = spec.get("type")
            if kind not in PARAMETER_TYPES:
                raise TemplateError(f"{self.where}: parameter {name}: type {kind!r} is not valid")
            if name in given:
                value = given[name]
            elif "defaultValue" in spec:
                value = self.value(spec["defaultValue"], f"parameters.{name}.defaultValue")
            else:
                raise TemplateError(f"{self.where}: parameter {name} has no value and no default")
            self._check_parameter(name, spec, value)
            bound[name] = value
        return bound

    def _check_parameter(self, name: str, spec: dict, value: Any) -> None:
        if isinstance(value, Runtime):
            return  # known at deploy time only (a nested deployment's input)
        kind = spec["type"].lower()
        expected = {
            "string": str,
            "securestring": str,
            "int": int,
            "bool": bool,
            "object": dict,
            "secureobject": dict,
            "array": list,
        }[kind]
        ok = isinstance(value, expected) and not (kind == "int" and isinstance(value, bool))
        if not ok:
            raise TemplateError(f"parameter {name}: expected {spec['type']}, got {value!r}")
        if "allowedValues" in spec and value not in spec["allowedValues"]:
            raise TemplateError(
                f"parameter {name}: {value!r} is not one of {spec['allowedValues']}"
            )
        if "minLength" in spec and len(value) < spec["minLength"]:
            raise TemplateError(f"parameter {name}: shorter than {spec['minLength']}: {value!r}")
        if "maxLength" in spec and len(value) > spec["maxLength"]:
            raise TemplateError(f"parameter {name}: longer than {spec['maxLength']}: {value!r}")
        if "minValue" in spec and value < spec["minValue"]:
            raise TemplateError(f"parameter {name}: below {spec['minValue']}: {value!r}")
        if "maxValue" in spec and value > spec["maxValue"]:
            raise TemplateError(f"parameter {name}: above {spec['maxValue']}: {value!r}")

    def variable(self, name: str) -> Any:
        if name in self._variables:
            return self._variables[name]
        declared = self.template.get("variables", {})
        loops = {c["name"]: c for c in declared.get("copy", [])}
        if name not in declared and name not in loops or name == "copy":
            raise TemplateError(f"{self.where}: variables('{name}') is not defined")
        if name in self._evaluating:
            raise TemplateError(f"{self.where}: variable {name} refers to itself")
        self._evaluating.add(name)
        if name in loops:
            loop = loops[name]
            count = self.value(loop["count"], f"variables.copy.{name}.count")
            items = []
            for i in range(count):
                self.copy_index[name] = i
                items.append(self.value(loop["input"], f"variables.copy.{name}.input"))
            self.copy_index.pop(name, None)
            result: Any = items
        else:
            result = self.value(declared[name], f"variables.{name}")
        self._evaluating.discard(name)
        self._variables[name] = result
        return result

    # values and expressions -----------------------------------------------------------------
    def value(self, node: Any, path: str) -> Any:
        if isinstance(node, dict):
            return {self.value(k, path): self.value(v, f"{path}.{k}") for k, v in node.items()}
        if isinstance(node, list):
            return [self.value(v, f"{path}[{i}]") for i, v in enumerate(node)]
        if isinstance(node, str) and node.startswith("[") and node.endswith("]"):
            if node.startswith("[["):
                return node[1:]  # an escaped literal
            try:
                return self.evaluate(_Parser(node[1:-1]).parse())
            except TemplateError as exc:
                raise TemplateError(f"{self.where}: {path}: {exc}") from None
        return node

    def evaluate(self, node: Any) -> Any:
        if isinstance(node, _Access):
            target = self.evaluate(node.target)
            key = node.key if isinstance(node.key, str) else self.evaluate(node.key)
            if isinstance(target, Runtime):
                return target.get(key)
            try:
                return target[key]
            except (KeyError, IndexError, TypeError):
                raise TemplateError(f"no {key!r} in {target!r}") from None
        if not isinstance(node, _Call):
            return node
        name = node.name
        fn = _FUNCTIONS.get(name)
        if fn is None or name not in _ARITY:
            raise TemplateError(f"unknown function {name}()")
        low, high = _ARITY[name]
        if len(node.args) < low or (high is not None and len(node.args) > high):
            raise TemplateError(f"{name}() takes {low}..{high or 'n'} arguments")
        if name == "if":  # only the chosen branch is evaluated, as in Resource Manager
            chosen = node.args[1] if self.evaluate(node.args[0]) else node.args[2]
            return self.evaluate(chosen)
        return fn(self, *[self.evaluate(a) for a in node.args])


def _copy_index(ev: Evaluator, *args: Any) -> int:
    loop = next((a for a in args if isinstance(a, str)), None)
    offset = next((a for a in args if isinstance(a, int)), 0)
    if loop is None:
        if len(ev.copy_index) != 1:
            raise TemplateError("copyIndex() outside a single copy loop")
        return next(iter(ev.copy_index.values())) + offset
    if loop not in ev.copy_index:
        raise TemplateError(f"copyIndex('{loop}') outside that copy loop")
    return ev.copy_index[loop] + offset


def _parameter(ev: Evaluator, name: str) -> Any:
    if name not in ev.params:
        raise TemplateError(f"parameters('{name}') is not defined")
    return ev.params[name]


def _reference(ev: Evaluator, target: str, api: str | None = None, full: str | None = None):
    return Runtime(f"reference({target}, {api})")


def _list_keys(ev: Evaluator, target: str, api: str) -> Runtime:
    return Runtime(f"listKeys({target}, {api})")


def _union(ev: Evaluator, *values: Any) -> Any:
    if all(isinstance(v, dict) for v in values):
        out: dict = {}
        for v in values:
            out.update(v)
        return out
    if all(isinstance(v, list) for v in values):
        out_list: list = []
        for v in values:
            out_list += [x for x in v if x not in out_list]
        return out_list
    raise TemplateError("union() of mixed types")


def _concat(ev: Evaluator, *values: Any) -> Any:
    if all(isinstance(v, list) for v in values):
        return [x for v in values for x in v]
    return "".join(_text(v) for v in values)


def _string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # Resource Manager writes JSON booleans
    return value if isinstance(value, str) else str(value)


def _create_object(ev: Evaluator, *args: Any) -> dict:
    if len(args) % 2:
        raise TemplateError("createObject() needs key/value pairs")
    return {args[i]: args[i + 1] for i in range(0, len(args), 2)}


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "parameters": _parameter,
    "variables": lambda ev, name: ev.variable(name),
    "resourceId": lambda ev, *a: _resource_id(ev.scope, list(a)),
    "subscriptionResourceId": lambda ev, *a: _resource_id(
        ev.scope, list(a), subscription_level=True
    ),
    "resourceGroup": lambda ev: {
        "name": ev.scope.resource_group,
        "id": f"/subscriptions/{ev.scope.subscription_id}/resourceGroups/{ev.scope.resource_group}",
        "location": ev.scope.location,
    },
    "subscription": lambda ev: {
        "subscriptionId": ev.scope.subscription_id,
        "id": f"/subscriptions/{ev.scope.subscription_id}",
        "tenantId": ev.scope.tenant_id,
    },
    "environment": lambda ev: {
        "name": "AzureCloud",
        "suffixes": {"storage": "core.windows.net"},
    },
    "uniqueString": lambda ev, *a: _unique_string(*a),
    "guid": lambda ev, *a: str(uuid.uuid5(uuid.NAMESPACE_URL, "|".join(map(str, a)))),
    "format": lambda ev, fmt, *a: _format(fmt, *a),
    "concat": _concat,
    "toLower": lambda ev, s: s.lower(),
    "take": lambda ev, s, n: s[: max(n, 0)],
    "reference": _reference,
    "listKeys": _list_keys,
    "createArray": lambda ev, *a: list(a),
    "createObject": _create_object,
    "union": _union,
    "items": lambda ev, o: [{"key": k, "value": o[k]} for k in sorted(o, key=str.lower)],
    "length": lambda ev, v: len(v),
    "copyIndex": _copy_index,
    "string": lambda ev, v: _string(v),
    "equals": lambda ev, a, b: a == b,
    "not": lambda ev, a: not a,
    "empty": lambda ev, v: len(v) == 0,
}
_FUNCTIONS["if"] = lambda ev, *a: None  # never called: evaluate() handles if() lazily


# --- resources -------------------------------------------------------------------------------
def _full_id(scope: Scope, type_: str, name: str, extension_scope: str | None) -> str:
    names = name.split("/")
    parts = type_.split("/")
    if len(names) != len(parts) - 1:
        raise TemplateError(f"{type_}: name {name!r} needs {len(parts) - 1} segments")
    path = parts[0] + "/" + "/".join(f"{t}/{n}" for t, n in zip(parts[1:], names, strict=True))
    if extension_scope is not None:
        base = extension_scope
        if not base.startswith("/"):
            base = (
                f"/subscriptions/{scope.subscription_id}/resourceGroups/{scope.resource_group}"
                f"/providers/{base}"
            )
        return f"{base}/providers/{path}"
    rg = f"/subscriptions/{scope.subscription_id}/resourceGroups/{scope.resource_group}"
    return f"{rg}/providers/{path}"


def deploy(
    template: dict, parameters: dict[str, Any], scope: Scope, where: str = "template"
) -> Deployment:
    """Evaluate a template as Resource Manager would for this scope and these parameters."""
    ev = Evaluator(template, parameters, scope, where)
    # Every variable is evaluated, used or not, as Resource Manager does.
    for name in template.get("variables", {}):
        if name != "copy":
            ev.variable(name)
    for loop in template.get("variables", {}).get("copy", []):
        ev.variable(loop["name"])

    resources: list[Resource] = []
    declared_ids: list[str] = []
    pending_depends: list[tuple[str, list[str]]] = []
    for index, raw in enumerate(template["resources"]):
        path = f"resources[{index}]"
        for key in ("type", "apiVersion", "name"):
            if key not in raw:
                raise TemplateError(f"{where}: {path}: missing {key}")
        if not API_VERSION.match(raw["apiVersion"]):
            raise TemplateError(f"{where}: {path}: apiVersion {raw['apiVersion']!r} is not a date")
        type_ = raw["type"]
        name = ev.value(raw["name"], f"{path}.name")
        extension_scope = ev.value(raw["scope"], f"{path}.scope") if "scope" in raw else None
        if type_ == "Microsoft.Resources/deployments":
            sub = ev.value(raw.get("subscriptionId", scope.subscription_id), f"{path}.subscription")
            rg = ev.value(raw.get("resourceGroup", scope.resource_group), f"{path}.resourceGroup")
            rid = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{type_}/{name}"
        else:
            sub, rg = scope.subscription_id, scope.resource_group
            rid = _full_id(scope, type_, name, extension_scope)
        declared_ids.append(rid)
        condition = ev.value(raw.get("condition", True), f"{path}.condition")
        depends = [ev.value(d, f"{path}.dependsOn") for d in raw.get("dependsOn", [])]
        pending_depends.append((path, depends))
        if not condition:
            continue  # Resource Manager skips a false condition: nothing inside is evaluated
        if type_ == "Microsoft.Resources/deployments":
            resources.extend(_nested(ev, raw, path, name, Scope(sub, rg, scope.location)))
            body = {"properties": {"mode": raw["properties"]["mode"]}}
        else:
            body = {
                k: ev.value(v, f"{path}.{k}")
                for k, v in raw.items()
                if k not in ("type", "apiVersion", "name", "dependsOn", "condition", "scope")
            }
        resources.append(Resource(type_, name, rid, raw["apiVersion"], body, sub, rg, depends))

    for path, depends in pending_depends:
        for dep in depends:
            if not any(dep == rid or rid.endswith("/" + dep) for rid in declared_ids):
                raise TemplateError(f"{where}: {path}.dependsOn: {dep} is not in this template")

    outputs = {}
    for name, spec in template.get("outputs", {}).items():
        value = ev.value(spec["value"], f"outputs.{name}")
        outputs[name] = value
    return Deployment(resources, outputs)


def _nested(ev: Evaluator, raw: dict, path: str, name: str, scope: Scope) -> list[Resource]:
    props = raw["properties"]
    if props.get("expressionEvaluationOptions", {}).get("scope") != "inner":
        raise TemplateError(f"{ev.where}: {path}: nested templates here use the inner scope")
    given = {
        key: ev.value(spec["value"], f"{path}.properties.parameters.{key}")
        for key, spec in props.get("parameters", {}).items()
    }
    inner = deploy(props["template"], given, scope, where=f"{ev.where} > {name}")
    return inner.resources
