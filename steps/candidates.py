"""Training candidates: one run may train up to MAX_CANDIDATES parameter sets side by
side and hand only the best (by validation AUC) to the gate.

A candidate is a partial TrainParams: the fields it names replace the request's
`params`, the rest are shared. The pipeline has a fixed number of train slots (nodes
`train`, `train_1`, ...); slot i trains candidate i, and a slot without a candidate
skips itself in well under a second. Overrides cross the pipeline boundary as one
compact string per slot (`num_leaves=63,learning_rate=0.1`): Azure ML pastes literal
inputs into a bash command line, and this alphabet (field names, numbers, enum words)
has nothing a shell would interpret.

Pure functions and pydantic only: the Functions app validates requests with this.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from copy import copy
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model, model_serializer

from steps._cli import UNSET
from steps.params import TrainParams

MAX_CANDIDATES = 4
# What select_best compares: train's validation AUC (higher is better). The test split
# stays untouched until the gate, so choosing the winner does not bias the gate.
SELECTION_METRIC = "valid_auc"
_PAIR = r"[a-z][a-z0-9_]*=[A-Za-z0-9_.+-]+"
_TEXT = re.compile(rf"^{_PAIR}(,{_PAIR})*$")


def _optional_fields() -> dict[str, Any]:
    fields = {}
    for name, field in TrainParams.model_fields.items():
        optional = copy(field)  # same bounds and description; None = "unchanged"
        optional.default = None
        fields[name] = (field.annotation | None, optional)
    return fields


class _Overrides(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_serializer(mode="wrap")
    def _only_changes(self, handler: Any) -> dict[str, Any]:
        # Records and job tags keep what the client asked for, not eleven nulls.
        return {k: v for k, v in handler(self).items() if v is not None}


TrainOverrides: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "TrainOverrides",
    __base__=_Overrides,
    __doc__="A training candidate: the TrainParams fields it changes (others as `params`).",
    **_optional_fields(),
)


def changed(overrides: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    """The fields a candidate sets, in TrainParams order."""
    values = overrides.model_dump() if isinstance(overrides, BaseModel) else dict(overrides)
    return {n: values[n] for n in TrainParams.model_fields if values.get(n) is not None}


def format_overrides(overrides: BaseModel | Mapping[str, Any]) -> str:
    """`name=value,...` in TrainParams order; "" for no change."""
    return ",".join(f"{name}={_text(value)}" for name, value in changed(overrides).items())


def parse_overrides(text: str) -> dict[str, Any]:
    """format_overrides' inverse, validated; ValueError names the field and the bounds."""
    text = text.strip()
    if not text or text == UNSET:  # the pipeline's "no change" (Azure ML drops "")
        return {}
    if not _TEXT.fullmatch(text):
        raise ValueError(
            f"overrides {text!r}: expected name=value pairs separated by commas, "
            "e.g. num_leaves=63,learning_rate=0.1"
        )
    values: dict[str, Any] = {}
    for pair in text.split(","):
        name, _, raw = pair.partition("=")
        field = TrainParams.model_fields.get(name)
        if field is None:
            raise ValueError(
                f"overrides: unknown parameter {name!r}; accepted: "
                + ", ".join(TrainParams.model_fields)
            )
        if name in values:
            raise ValueError(f"overrides: {name} is given twice")
        values[name] = _convert(name, raw, field.annotation)
    try:
        return changed(TrainOverrides(**values))
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "?"
        raise ValueError(f"overrides: {name}={err.get('input')!r}: {err['msg']}") from None


def candidate_params(base: TrainParams, overrides: Mapping[str, Any]) -> TrainParams:
    """The parameters one candidate trains with."""
    return TrainParams(**{**base.model_dump(), **dict(overrides)})


def thread_share(candidates: int, cores: int) -> int:
    """LightGBM threads per candidate when `candidates` train at once on `cores` cores.

    LightGBM's OpenMP threads spin while they wait for each other, so two candidates
    with all cores each on the same machine fight for every core and both slow down
    far more than 2x. Giving each its share (at least one thread) keeps the total near
    the core count; more candidates than cores oversubscribe mildly with single
    threads, which time-slice without the spinning."""
    return max(1, cores // max(1, candidates))


def pick_best(results: Sequence[Mapping[str, Any]]) -> int | None:
    """Index of the best trained candidate by SELECTION_METRIC (higher wins; ties go to
    the lower slot, so a rerun picks the same one). Skipped slots and candidates
    without a finite metric never win; None if nothing qualifies."""
    best: int | None = None
    best_value = -math.inf
    for index, result in enumerate(results):
        if result.get("skipped"):
            continue
        value = result.get(SELECTION_METRIC)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if not math.isfinite(value):
            continue
        if best is None or value > best_value:
            best, best_value = index, float(value)
    return best


def _text(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _convert(name: str, raw: str, annotation: Any) -> Any:
    try:
        if annotation is int:
            return int(raw)
        if annotation is float:
            return float(raw)
    except ValueError:
        kind = "an integer" if annotation is int else "a number"
        raise ValueError(f"overrides: {name}={raw!r}: expected {kind}") from None
    return raw


def share_cores(inputs: Mapping[str, Any], cores: int) -> dict[str, str]:
    """The candidate_i pipeline inputs to use when every candidate trains on this one
    machine: a candidate left at num_threads 0 ("all cores") gets thread_share()
    threads instead. Nothing changes for a single candidate, and nothing on Azure ML,
    where each slot has a node of its own."""
    count = int(inputs.get("candidate_count") or 1)
    if count < 2:
        return {}
    threads = thread_share(count, cores)
    updated = {}
    for slot in range(count):
        key = f"candidate_{slot}"
        overrides = parse_overrides(str(inputs.get(key) or ""))
        if overrides.get("num_threads", inputs.get("num_threads", 0)) == 0:
            overrides["num_threads"] = threads
            updated[key] = format_overrides(overrides)
    return updated
