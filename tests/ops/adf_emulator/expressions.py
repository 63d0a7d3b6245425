"""The Data Factory expression language, as far as the shipped pipelines use it.

Microsoft Learn, "Expressions and functions in Azure Data Factory": a JSON string value
starting with `@` is an expression, `@@` escapes it, `@{...}` interpolates into a
string, and `{"value": "@...", "type": "Expression"}` is an expression object.
Functions: the system ones given to an Evaluator (pipeline(), activity(), variables(),
dataset(), trigger()), and concat, equals, not, or, coalesce, last, split,
formatDateTime (yyyy-MM-dd only). A property that does not exist fails the activity,
as in ADF. Anything else raises Unsupported.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class Unsupported(AssertionError):
    """Something the emulator does not implement: the test must fail, not guess."""


class ActivityError(Exception):
    def __init__(self, message: str, code: str = "ActivityFailed") -> None:
        super().__init__(message)
        self.code, self.message = code, message


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
