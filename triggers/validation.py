"""Bytes -> TrainingRequest, or an error naming every bad field.

Malformed JSON is a 400 with its position; anything JSON that the model refuses is
a 422 listing each field by JSON path with the value given and what is accepted
(from pydantic's errors, without its documentation URLs).

JSON that Python's parser would choke on is refused before it is parsed, by name:
nesting deeper than JSON_MAX_DEPTH (the C parser recurses, and ~1,000 levels fit in
a 64 KiB body) and integers longer than JSON_MAX_INTEGER_DIGITS (Python refuses to
convert more than 4,300 digits, and the conversion is quadratic below that).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from pipeline.request import TrainingRequest
from pipeline.verification import VerificationRequest

# No request model nests past 4 levels; 32 leaves room and stays far from recursion.
JSON_MAX_DEPTH = 32
# Python's own int/str conversion limit (sys.int_info.default_max_str_digits).
JSON_MAX_INTEGER_DIGITS = 4300


class RequestError(Exception):
    """A request we refuse; maps to one HTTP status and a JSON error body."""

    def __init__(
        self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []


def parse_training_request(body: bytes) -> TrainingRequest:
    return validate_training_request(parse_json(body))


def parse_verification_request(body: bytes) -> VerificationRequest:
    """A POST /api/verifications body; the same JSON rules and error shape as a run's."""
    value = parse_json(body)
    if isinstance(value, dict):
        value = {"kind": "verify", **value}  # the route says what it is; the body may too
    return validate_request(value, VerificationRequest)


def parse_json(body: bytes) -> Any:
    text = _decode(body)
    _check_nesting(text)
    try:
        value = (
            json.loads(text, parse_constant=_no_constants, parse_int=_bounded_int)
            if text.strip()
            else {}
        )
    except _NotJson as exc:
        raise RequestError(400, "malformed_json", str(exc)) from None
    except json.JSONDecodeError as exc:
        raise RequestError(
            400,
            "malformed_json",
            f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
            f"(character {exc.pos})",
            [{"line": exc.lineno, "column": exc.colno, "position": exc.pos}],
        ) from None
    return value


def validate_training_request(value: Any) -> TrainingRequest:
    return validate_request(value, TrainingRequest)


def validate_request(value: Any, model: type[BaseModel]) -> Any:
    if not isinstance(value, dict):
        raise RequestError(
            422,
            "invalid_request",
            f"body must be a JSON object of {model.__name__} fields, not {_json_type(value)}",
            [{"path": "$", "value": value, "message": "expected an object"}],
        )
    try:
        # JSON-mode validation: strict types as JSON has them (1 is a number, "1" is not).
        return model.model_validate_json(json.dumps(value))
    except ValidationError as exc:
        details = validation_details(exc, model)
        names = ", ".join(d["path"] for d in details)
        raise RequestError(
            422, "invalid_request", f"{len(details)} invalid field(s): {names}", details
        ) from None


def validation_details(exc: ValidationError, model: type[BaseModel]) -> list[dict[str, Any]]:
    details = []
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        detail: dict[str, Any] = {"path": json_path(loc)}
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            accepted = _fields_at(model, loc[:-1])
            message = "unknown field" + (
                f"; accepted fields here: {', '.join(accepted)}" if accepted else ""
            )
        if err["type"] == "missing":
            message = "required field is missing"
        else:
            detail["value"] = _jsonable(err.get("input"))
        detail["message"] = message
        details.append(detail)
    return details


def json_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "$"


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        current = annotation
    return list(current.model_fields)


class _NotJson(ValueError):
    pass


def _bounded_int(digits: str) -> int:
    count = len(digits.lstrip("-"))
    if count > JSON_MAX_INTEGER_DIGITS:
        raise RequestError(
            400,
            "integer_too_long",
            f"body has an integer of {count} digits; at most {JSON_MAX_INTEGER_DIGITS} "
            "(JSON_MAX_INTEGER_DIGITS) are accepted",
            [{"digits": count, "max_digits": JSON_MAX_INTEGER_DIGITS}],
        )
    return int(digits)


# A JSON string (escapes included; an unclosed one runs to the end, so no quote is
# scanned twice), or one bracket outside strings.
_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\Z)|[\[\]{}]', re.DOTALL)


def _check_nesting(text: str) -> None:
    """Refuse nesting deeper than JSON_MAX_DEPTH before json.loads recurses into it.
    Brackets inside strings do not count; malformed JSON is left to the parser."""
    depth = 0
    for found in _STRING_OR_BRACKET.finditer(text):
        token = found.group()
        if token in "[{":
            depth += 1
            if depth > JSON_MAX_DEPTH:
                raise RequestError(
                    400,
                    "json_too_deep",
                    f"body nests arrays/objects more than {JSON_MAX_DEPTH} levels deep "
                    f"(at character {found.start()}); at most {JSON_MAX_DEPTH} "
                    "(JSON_MAX_DEPTH) are accepted",
                    [{"position": found.start(), "max_depth": JSON_MAX_DEPTH}],
                )
        elif token in "]}":
            depth -= 1


def _no_constants(name: str):
    # Python's json accepts NaN and Infinity; JSON does not, and neither do we.
    raise _NotJson(f"body is not valid JSON: {name} is not a JSON number")


def _decode(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RequestError(
            400,
            "malformed_json",
            f"body is not UTF-8 text: invalid byte at position {exc.start}",
            [{"position": exc.start}],
        ) from None


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    if isinstance(value, str) and len(value) > 200:
        return value[:200] + "..."
    return value
