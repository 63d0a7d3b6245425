"""Reading what prep wrote: the resolved dataset and the three Parquet splits.

Every later step (train, score_champion, evaluate, deploy, smoke_test) reads the
prepared folder through here, so the layout is defined once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from steps._cli import StepError, read_json
from steps.dataset import ResolvedDataset

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

SPLITS = ("train", "valid", "test")
DATASET_FILE = "dataset.json"
PROFILE_FILE = "profile.json"


def split_path(prepared: Path, split: str) -> Path:
    return prepared / f"{split}.parquet"


def load_dataset(prepared: Path) -> ResolvedDataset:
    raw = read_json(prepared / DATASET_FILE, what="prepared data")
    try:
        return ResolvedDataset(**raw)
    except Exception as exc:
        raise StepError(f"prepared data: {prepared / DATASET_FILE} is not valid ({exc})") from None


def load_split(
    prepared: Path, split: str, dataset: ResolvedDataset
) -> tuple[np.ndarray, np.ndarray]:
    """(features as one float32 matrix in model order, target as int8)."""
    import numpy as np
    import pyarrow.parquet as pq

    path = _existing(prepared, split)
    table = pq.read_table(path, columns=[*dataset.features, dataset.config.target_column])
    rows = table.num_rows
    matrix = np.empty((rows, len(dataset.features)), dtype="float32")
    for index, name in enumerate(dataset.features):
        matrix[:, index] = table.column(name).to_numpy()
    target = table.column(dataset.config.target_column).to_numpy().astype("int8")
    del table
    return matrix, target


def load_split_frame(
    prepared: Path, split: str, dataset: ResolvedDataset, rows: int | None = None
) -> tuple[pd.DataFrame, np.ndarray]:
    """(feature frame with the model's column names, target); optionally the first rows."""
    import pyarrow.parquet as pq

    path = _existing(prepared, split)
    table = pq.read_table(path, columns=[*dataset.features, dataset.config.target_column])
    if rows is not None:
        table = table.slice(0, rows)
    frame = table.to_pandas()
    target = frame.pop(dataset.config.target_column).to_numpy().astype("int8")
    return frame, target


def _existing(prepared: Path, split: str) -> Path:
    path = split_path(prepared, split)
    if not path.is_file():
        raise StepError(f"prepared data: {path} does not exist (did prep run?)")
    return path
