"""Entry script (init/run) for a submitted MLflow model on the verification endpoint.

A model trained elsewhere carries no aml-trigger dataset description unless it was
made by our train step; then its cleaning is applied as steps/score.py does.
Otherwise the records go to the model as a DataFrame, as MLflow's own serving
would pass them. The answer is the contract every entry script here follows:
`{"probabilities": [...]}` (a two-column output is read as [P(0), P(1)]).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

try:  # the server aliases this module name to its own package
    from azureml.contrib.services.aml_response import AMLResponse
except ImportError:  # imported outside the server (tests, tools)
    from azureml_inference_server_http.api.aml_response import AMLResponse

_model = None
_dataset = None


def init() -> None:
    global _model, _dataset
    import mlflow

    from steps.dataset import ResolvedDataset
    from steps.score import find_model_folder
    from steps.train import DATASET_METADATA_KEY

    _model = mlflow.pyfunc.load_model(str(find_model_folder(Path(os.environ["AZUREML_MODEL_DIR"]))))
    raw = (_model.metadata.metadata or {}).get(DATASET_METADATA_KEY)
    _dataset = ResolvedDataset(**raw) if raw else None


def run(raw: str):
    import numpy as np
    import pandas as pd

    from steps._cli import StepError

    try:
        payload = json.loads(raw)
    except (TypeError, ValueError) as exc:
        return _bad_request(f'body is not JSON ({exc}); send {{"data": [{{column: value}}]}}')
    records = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(records, list) or not records:
        return _bad_request('body must be an object with a non-empty "data" list of records')
    frame = pd.DataFrame.from_records(records)
    if _dataset is not None:
        try:
            frame = _dataset.clean(frame, source="request")
        except StepError as exc:
            return _bad_request(str(exc))
    try:
        output = np.asarray(_model.predict(frame), dtype="float64")
    except Exception as exc:  # noqa: BLE001 - the model's own complaint, as a 400
        return _bad_request(f"the model cannot score these records: {type(exc).__name__}: {exc}")
    if output.ndim == 2 and output.shape[1] == 2:
        output = output[:, 1]
    return {"probabilities": output.reshape(-1).tolist()}


def _bad_request(message: str):
    return AMLResponse({"error": message[:1000]}, 400, json_str=True)
