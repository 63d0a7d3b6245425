"""The local backend's end-of-run event, in the shape Azure ML publishes to Event Grid.

Azure ML raises `Microsoft.MachineLearningServices.RunStatusChanged` when a job
reaches a state ("Azure Machine Learning as an Event Grid source",
https://learn.microsoft.com/azure/event-grid/event-schema-machine-learning); infra/
subscribes the app's `run_ended` function to it. A local run ends in the worker
process, which writes the same event as a JSON file into
`$AML_TRIGGER_HOME/events/`; the local host delivers each file to its Event Grid
functions and deletes it. A file rather than a call to the host: the worker need
not know whether, or on which port, a host runs, and an event written while the
host is down is delivered when it starts (Event Grid also retries for 24 hours).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from pipeline.runs import TERMINAL, RunRecord

EVENTS_DIR = "events"
_AML_STATUS = {"completed": "Completed", "failed": "Failed", "canceled": "Canceled"}


def events_dir(home: Path | str) -> Path:
    return Path(home) / EVENTS_DIR


def run_ended_event(record: RunRecord, *, experiment: str) -> dict:
    """The Event Grid event Azure ML would send for this run's end."""
    return {
        "id": uuid.uuid4().hex,
        "topic": "local/aml-trigger",
        "subject": f"experiments/{experiment}/runs/{record.run_id}",
        "eventType": "Microsoft.MachineLearningServices.RunStatusChanged",
        "eventTime": datetime.now(UTC).isoformat(),
        "data": {
            "experimentId": experiment,
            "experimentName": experiment,
            "runId": record.run_id,
            "runType": "azureml.PipelineRun",
            "runTags": {},
            "runProperties": {},
            "runStatus": _AML_STATUS[record.status],
        },
        "dataVersion": "",
        "metadataVersion": "1",
    }


def publish_run_ended(home: Path | str, record: RunRecord, *, experiment: str) -> Path | None:
    """Write the event for a run that ended; None (nothing written) if it has not."""
    if record.status not in TERMINAL:
        return None
    folder = events_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    event = run_ended_event(record, experiment=experiment)
    final = folder / f"{time.time_ns():020d}-{event['id']}.json"
    tmp = folder / f".{final.name}.tmp"
    tmp.write_text(json.dumps([event]), encoding="utf-8")  # Event Grid posts an array
    os.replace(tmp, final)
    return final
