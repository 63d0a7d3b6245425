"""The steps' error convention, shared by every step CLI.

A step that fails for a known reason (bad data, bad parameter) prints exactly one
line `error: <message>` to stderr and exits 2; the executor shows that line as the
step's error. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from pydantic import BaseModel, ValidationError

EXIT_KNOWN_FAILURE = 2

# What a pipeline passes for "no value" in a string input. Azure ML cannot carry "":
# azure-ai-ml leaves empty-string inputs out of a pipeline job's REST body
# ("not support pass None or empty input value", entities/_job/pipeline/pipeline_job.py)
# and the service then fails the node with "Assignment for parameter ... is not
# specified" (azure-sdk-for-python#38892); leaving an optional input out fails the
# same way in places (#41834). So every string input is always bound, with this word
# standing for "unset" (the placeholder the Azure ML team itself suggested in
# MachineLearningNotebooks#668).
UNSET = "none"


def unset_text(value: str) -> str:
    """argparse `type=` for a string input that may be UNSET: gives "" for it."""
    return "" if value.strip() in {"", UNSET} else value


class StepError(Exception):
    """A known failure; the message names the file/column/value and what is accepted."""


class StepParser(argparse.ArgumentParser):
    """argparse whose usage errors follow the one-line `error:` convention."""

    def error(self, message: str) -> NoReturn:
        raise StepError(f"{self.prog}: {message}")


def run_step(
    body: Callable[[argparse.Namespace], None],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
) -> int:
    """Parse argv, run body, map StepError to the convention; returns the exit code."""
    try:
        args = parser.parse_args(argv)
        body(args)
    except StepError as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        return EXIT_KNOWN_FAILURE
    return 0


def validated(model: type[BaseModel], values: dict[str, Any]) -> Any:
    """Build a params model from CLI values; a bad value names --flag, value and bounds."""
    try:
        return model(**values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "?"
            flag = "--" + name.replace("_", "-")
            accepted = accepted_range(model, name)
            problems.append(f"{flag}={err.get('input')!r}: {err['msg']}; accepted: {accepted}")
        raise StepError("; ".join(problems)) from None


def accepted_range(model: type[BaseModel], name: str) -> str:
    field = model.model_fields.get(name)
    if field is None:
        return "no such parameter"
    bounds = []
    for item in field.metadata:
        for attr, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            value = getattr(item, attr, None)
            if value is not None:
                bounds.append(f"{symbol} {value}")
    if bounds:
        return " and ".join(bounds)
    annotation = getattr(field.annotation, "__args__", None)
    if annotation:
        return " | ".join(str(a) for a in annotation)
    return str(field.annotation)


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (temp file + rename), so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=False, default=_jsonable)
            handle.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; other steps and users read these
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path, *, what: str) -> Any:
    """Read a JSON file another step wrote; a missing or broken one is a StepError."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StepError(f"{what}: {path} does not exist (did the previous step run?)") from None
    except (OSError, ValueError) as exc:
        raise StepError(f"{what}: {path} is not readable JSON ({exc})") from None


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
