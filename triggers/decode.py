"""Host payloads into typed events: pure decoding, each error names the field.

- Drop-window messages are the JSON this service writes to its own queue
  (triggers/drop_alarms.py); anything else on the queue is refused with the reason.
- Run events follow "Azure Machine Learning as an Event Grid source"
  (https://learn.microsoft.com/azure/event-grid/event-schema-machine-learning):
  `Microsoft.MachineLearningServices.RunCompleted` and `...RunStatusChanged`,
  subject `experiments/{experimentId}/runs/{runId}`, data with `experimentName`,
  `runId`, `runType`, `runTags`, `runProperties` and (RunStatusChanged only)
  `runStatus`. A run of this app carries its ledger run id in the job property
  `aml_trigger.comparison_group` (several jobs when computes are compared), else
  the job name is the run id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from triggers.events import DropWindowDue, RunEnded

RUN_COMPLETED = "Microsoft.MachineLearningServices.RunCompleted"
RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"
# Azure ML states that end a run (pipeline/aml_status.py maps every state).
_TERMINAL_AML = {"Completed": "completed", "Failed": "failed", "Canceled": "canceled"}
_GROUP_PROPERTY = "aml_trigger.comparison_group"


class UndecodableEvent(ValueError):
    """The payload is not one this function handles; the message says why."""


def drop_window(body: bytes | str) -> DropWindowDue:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested past the stack
        raise UndecodableEvent(f"drop-window message is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UndecodableEvent("drop-window message must be a JSON object")
    for field in ("container", "folder"):
        if not isinstance(doc.get(field), str):
            raise UndecodableEvent(f"drop-window message field {field!r} must be a string")
    return DropWindowDue(container=doc["container"], folder=doc["folder"])


def drop_window_message(container: str, folder: str) -> str:
    return json.dumps({"container": container, "folder": folder}, separators=(",", ":"))


def run_ended(event_type: str, data: Mapping[str, Any] | None) -> RunEnded | None:
    """The run that ended, or None for an event that says nothing ended (another
    type, or a status change to a state that is not terminal)."""
    if event_type == RUN_COMPLETED:
        status = "completed"
    elif event_type == RUN_STATUS_CHANGED:
        status = _TERMINAL_AML.get(str((data or {}).get("runStatus")))
        if status is None:
            return None
    else:
        return None
    if not isinstance(data, Mapping):
        raise UndecodableEvent(f"{event_type} event has no data object")
    run_id = data.get("runId")
    if not isinstance(run_id, str) or not run_id:
        raise UndecodableEvent(f"{event_type} event: data.runId must be a non-empty string")
    properties = data.get("runProperties")
    group = properties.get(_GROUP_PROPERTY) if isinstance(properties, Mapping) else None
    return RunEnded(
        run_id=group if isinstance(group, str) and group else run_id,
        status=status,
        experiment=data.get("experimentName"),
    )
