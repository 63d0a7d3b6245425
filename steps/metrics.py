"""Scoring a model on a prepared split: the metrics, and loading an MLflow model with
the dataset resolution it was trained with (so the split can be re-coded for it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from steps._cli import StepError
from steps.dataset import ResolvedDataset
from steps.train import DATASET_METADATA_KEY

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


def classification_metrics(target: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    auc = float(roc_auc_score(target, probabilities))
    return {
        "auc": auc,
        "normalized_gini": 2.0 * auc - 1.0,
        "log_loss": float(log_loss(target, probabilities, labels=[0, 1])),
        "pr_auc": float(average_precision_score(target, probabilities)),
    }


def load_model(uri: str):
    """(pyfunc model, its ResolvedDataset) from a path or an artifact URI (a registered
    version's: steps.champion.model_version_uri)."""
    import mlflow

    model = mlflow.pyfunc.load_model(uri)
    raw = (model.metadata.metadata or {}).get(DATASET_METADATA_KEY)
    if raw is None:
        raise StepError(f"model {uri}: no dataset description in its MLmodel metadata")
    return model, ResolvedDataset(**raw)


def recode(frame: pd.DataFrame, source: ResolvedDataset, target: ResolvedDataset) -> pd.DataFrame:
    """A frame cleaned with one resolution, re-expressed in another model's features/codes."""
    import numpy as np

    missing = [f for f in target.features if f not in frame.columns]
    if missing:
        raise StepError(f"the data lacks feature(s) the model needs: {', '.join(missing[:10])}")
    out = frame[target.features].copy()
    for name in target.features:
        old = source.categories.get(name)
        new = target.categories.get(name)
        if old == new:
            continue
        values = out[name].to_numpy(dtype="float64")
        lookup = {label: i for i, label in enumerate(new or [])}
        recoded = np.full(len(values), np.nan, dtype="float32")
        for row, value in enumerate(values):
            if np.isnan(value):
                continue
            label = old[int(value)] if old is not None else str(int(value))
            recoded[row] = lookup.get(label, np.nan) if new is not None else _number(label)
        out[name] = recoded
    return out


def score_split(model: Any, model_dataset: ResolvedDataset, prepared: Path) -> dict[str, float]:
    """The model's metrics on the prepared test split."""
    import numpy as np

    from steps.prepared import load_dataset, load_split_frame

    split_dataset = load_dataset(prepared)
    frame, target = load_split_frame(prepared, "test", split_dataset)
    features = recode(frame, split_dataset, model_dataset)
    probabilities = np.asarray(model.predict(features), dtype="float64").reshape(-1)
    return classification_metrics(target, probabilities)


def _number(label: str) -> float:
    try:
        return float(label)
    except ValueError:
        return float("nan")
