"""The scoring entry script Azure ML runs (init/run), and the local endpoint too.

`run` takes `{"data": [{column: value, ...}, ...]}` with raw values as in the
training data (-1 for missing), applies the cleaning prep applied (the resolved
dataset config travels in the model's MLmodel metadata) and returns
`{"probabilities": [...], "model_version": ...}`. Bad input is a 400 naming the
problem, never a 500.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# The server imports this file by path; make the `steps` package importable beside it.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

try:  # the server aliases this module name to its own package
    from azureml.contrib.services.aml_response import AMLResponse
except ImportError:  # imported outside the server (tests, tools)
    from azureml_inference_server_http.api.aml_response import AMLResponse

MAX_ROWS = 10_000

_model = None
_dataset = None
_version: str | None = None


def find_model_folder(root: Path) -> Path:
    """The folder holding MLmodel under AZUREML_MODEL_DIR (Azure nests it one level)."""
    candidates = sorted(root.rglob("MLmodel"), key=lambda p: len(p.parts))
    if not candidates:
        raise RuntimeError(f"no MLmodel file under AZUREML_MODEL_DIR={root}")
    return candidates[0].parent


def init() -> None:
    global _model, _dataset, _version
    from steps.metrics import load_model

    root = Path(os.environ["AZUREML_MODEL_DIR"])
    _model, _dataset = load_model(str(find_model_folder(root)))
    # Azure ML mounts models at .../azureml-models/<name>/<version>; the local endpoint too.
    _version = os.environ.get("AML_TRIGGER_MODEL_VERSION") or (
        root.name if root.name.isdigit() else None
    )


def run(raw: str):
    import numpy as np
    import pandas as pd

    from steps._cli import StepError

    try:
        payload = json.loads(raw)
    except (TypeError, ValueError) as exc:
        return _bad_request(f'body is not JSON ({exc}); send {{"data": [{{column: value}}]}}')
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        return _bad_request('body must be an object with a "data" list of records')
    records = payload["data"]
    if not records:
        return _bad_request('"data" is empty: send at least one record')
    if len(records) > MAX_ROWS:
        return _bad_request(f'"data" has {len(records)} records; at most {MAX_ROWS} per request')
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            return _bad_request(f"record {index} is a {type(record).__name__}, not an object")
    frame = pd.DataFrame.from_records(records)
    try:
        features = _dataset.clean(frame, source="request")
    except StepError as exc:
        return _bad_request(str(exc))
    probabilities = np.asarray(_model.predict(features), dtype="float64").reshape(-1)
    return {"probabilities": probabilities.tolist(), "model_version": _version}


def _bad_request(message: str):
    return AMLResponse({"error": message}, 400, json_str=True)
