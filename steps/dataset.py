"""What a training data set looks like: columns, types, the missing marker.

The default is the Porto Seguro safe-driver shape. Users with other data write a
small JSON or YAML file with the same fields (`--dataset-config`); no code changes.
Prep resolves the config against the data (`ResolvedDataset`: the feature list,
each feature's type, the codes of text categories) and the model carries that
resolution, so scoring applies exactly the cleaning training saw.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from steps._cli import StepError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

ColumnType = Literal["numeric", "categorical", "binary"]

PORTO_FEATURES: list[str] = [
    "ps_ind_01", "ps_ind_02_cat", "ps_ind_03", "ps_ind_04_cat", "ps_ind_05_cat",
    *[f"ps_ind_{i:02d}_bin" for i in range(6, 14)],
    "ps_ind_14", "ps_ind_15",
    *[f"ps_ind_{i:02d}_bin" for i in range(16, 19)],
    *[f"ps_reg_{i:02d}" for i in range(1, 4)],
    *[f"ps_car_{i:02d}_cat" for i in range(1, 12)],
    *[f"ps_car_{i:02d}" for i in range(11, 16)],
    *[f"ps_calc_{i:02d}" for i in range(1, 15)],
    *[f"ps_calc_{i:02d}_bin" for i in range(15, 21)],
]  # fmt: skip


class DatasetConfig(BaseModel):
    """How to read a tabular binary-classification data set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id_column: str | None = Field(
        "id", description="Column with a unique row id (checked for duplicates); null = none."
    )
    target_column: str = Field("target", description="The 0/1 label column.")
    features: list[str] | None = Field(
        default_factory=lambda: list(PORTO_FEATURES),
        description="Explicit feature columns, in model order; missing ones fail prep by "
        "name. null = every column except the id, the target and `drop_columns`.",
    )
    column_types: dict[str, ColumnType] = Field(
        default_factory=dict,
        description="Type of a feature (numeric / categorical / binary); overrides the "
        "suffix rule.",
    )
    infer_types_from_suffix: bool = Field(
        True,
        description="Features ending in `_cat` are categorical, `_bin` binary, others numeric.",
    )
    drop_columns: list[str] = Field(
        default_factory=list, description="Columns ignored even if present in the data."
    )
    missing_marker: float | None = Field(
        -1, description="Value that means 'missing' in any feature (Porto Seguro uses -1)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> DatasetConfig:
        if self.features is not None:
            if not self.features:
                raise ValueError("features: give at least one column, or null for all columns")
            dupes = sorted({f for f in self.features if self.features.count(f) > 1})
            if dupes:
                raise ValueError(f"features: repeated column(s) {dupes}")
            reserved = {self.target_column, self.id_column, *self.drop_columns} & set(self.features)
            if reserved:
                raise ValueError(
                    f"features: {sorted(c for c in reserved if c)} are also the id, target or "
                    "a dropped column"
                )
        if self.id_column is not None and self.id_column == self.target_column:
            raise ValueError("id_column and target_column must differ")
        return self

    def type_of(self, column: str) -> ColumnType:
        if column in self.column_types:
            return self.column_types[column]
        if self.infer_types_from_suffix:
            if column.endswith("_cat"):
                return "categorical"
            if column.endswith("_bin"):
                return "binary"
        return "numeric"

    def feature_columns(self, available: list[str]) -> list[str]:
        if self.features is not None:
            return list(self.features)
        skip = {self.target_column, self.id_column, *self.drop_columns}
        return [c for c in available if c not in skip]


def load_config(path: Path | None) -> DatasetConfig:
    """The config in a JSON/YAML file, or the Porto Seguro default when path is None."""
    if path is None:
        return DatasetConfig()
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StepError(f"dataset config {path}: cannot be read ({exc.strerror})") from None
    try:
        if suffix == ".json":
            raw = json.loads(text)
        elif suffix in {".yaml", ".yml"}:
            import yaml

            raw = yaml.safe_load(text)
        else:
            raise StepError(
                f"dataset config {path.name}: unknown format {suffix!r}; "
                "accepted: .json, .yaml, .yml"
            )
    except (ValueError, ImportError) as exc:  # yaml.YAMLError subclasses Exception only
        raise StepError(f"dataset config {path.name}: not valid {suffix[1:]} ({exc})") from None
    except Exception as exc:
        if type(exc).__module__.startswith("yaml"):
            raise StepError(f"dataset config {path.name}: not valid YAML ({exc})") from None
        raise
    if not isinstance(raw, dict):
        raise StepError(f"dataset config {path.name}: must be a mapping of fields to values")
    try:
        return DatasetConfig(**raw)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
            for err in exc.errors()
        ]
        allowed = ", ".join(DatasetConfig.model_fields)
        raise StepError(
            f"dataset config {path.name}: {'; '.join(problems)} (fields: {allowed})"
        ) from None


class ResolvedDataset(BaseModel):
    """The config as prep applied it to one data set; saved beside the splits and the model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: DatasetConfig = Field(description="The dataset config prep used.")
    features: list[str] = Field(description="Feature columns in model order.")
    types: dict[str, ColumnType] = Field(description="Type of every feature.")
    categories: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Text-valued categorical features: the code of a value is its index.",
    )

    def categorical_features(self) -> list[str]:
        return [f for f in self.features if self.types[f] == "categorical"]

    def clean(self, frame: pd.DataFrame, *, source: str) -> pd.DataFrame:
        """Raw records -> the float32 feature frame the model takes (as prep makes it)."""
        import pandas as pd

        missing = [f for f in self.features if f not in frame.columns]
        if missing:
            raise StepError(
                f"{source}: missing feature column(s) {', '.join(missing)} "
                f"({len(self.features)} features expected)"
            )
        columns = {}
        for name in self.features:
            values = coerce_feature(
                frame[name],
                kind=self.types[name],
                column=name,
                source=source,
                marker=self.config.missing_marker,
                keep_text=name in self.categories,
            )
            if name in self.categories:
                values = encode_categories(values, self.categories[name])
            columns[name] = values
        return pd.DataFrame(columns, index=frame.index)

    def to_records(self, features: pd.DataFrame) -> list[dict[str, Any]]:
        """The inverse of clean: cleaned rows back to raw records (marker for missing)."""
        import numpy as np

        marker = self.config.missing_marker
        out: dict[str, list[Any]] = {}
        for name in self.features:
            values = features[name].to_numpy(dtype="float64")
            if name in self.categories:
                vocab = self.categories[name]
                out[name] = [
                    (marker if marker is not None else None) if np.isnan(v) else vocab[int(v)]
                    for v in values
                ]
                continue
            integral = self.types[name] != "numeric" or bool(
                np.all(np.isnan(values) | (values == np.round(values)))
            )
            out[name] = [
                (_plain(marker) if marker is not None else None)
                if np.isnan(v)
                else (int(v) if integral else float(v))
                for v in values
            ]
        return [dict(zip(out, row, strict=True)) for row in zip(*out.values(), strict=True)]


def _plain(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def coerce_feature(
    series: pd.Series,
    *,
    kind: ColumnType,
    column: str,
    source: str,
    marker: float | None,
    keep_text: bool = False,
) -> np.ndarray:
    """One raw column -> float32 with NaN for missing; text categoricals stay text.

    Raises StepError naming the column, the source and an example bad value.
    """
    import numpy as np
    import pandas as pd

    if kind == "categorical" and (keep_text or not _is_numeric(series)):
        text = series.astype("object")
        present = text.notna()
        if marker is not None:
            present &= text.astype("str") != str(_plain(marker))
        return np.where(present, text.astype("str"), None).astype(object)
    if _is_numeric(series):
        values = series.to_numpy(dtype="float64", na_value=np.nan, copy=True)
    else:
        numeric = pd.to_numeric(series, errors="coerce")
        bad = numeric.isna() & series.notna()
        if bad.any():
            example = series[bad].iloc[0]
            example = example.item() if hasattr(example, "item") else example
            raise StepError(
                f"column {column!r} in {source} must be {kind} (numbers); found {example!r} "
                f"({int(bad.sum())} non-numeric value(s))"
            )
        values = numeric.to_numpy(dtype="float64", na_value=np.nan, copy=True)
    if marker is not None:
        values[values == marker] = np.nan
    present = ~np.isnan(values)
    if kind == "binary":
        bad = present & (values != 0) & (values != 1)
        if bad.any():
            raise StepError(
                f"column {column!r} in {source} is binary: accepted values 0, 1"
                f"{'' if marker is None else f' or {_plain(marker)} (missing)'}; found "
                f"{_plain(values[bad][0])!r} ({int(bad.sum())} such value(s))"
            )
    elif kind == "categorical":
        bad = present & ((values != np.round(values)) | (values < 0))
        if bad.any():
            raise StepError(
                f"column {column!r} in {source} is categorical: accepted non-negative integer "
                f"codes or text; found {_plain(values[bad][0])!r} ({int(bad.sum())} such value(s))"
            )
    return values.astype("float32")


def encode_categories(values: np.ndarray, vocabulary: list[str]) -> np.ndarray:
    """Text categories -> float32 codes; unseen or missing values become NaN."""
    import numpy as np
    import pandas as pd

    index = {v: i for i, v in enumerate(vocabulary)}
    codes = pd.Series(values, dtype="object").map(index)
    return codes.to_numpy(dtype="float32", na_value=np.nan)


def _is_numeric(series: pd.Series) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(series))
