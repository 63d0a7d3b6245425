"""prep: data parts -> validated, cleaned, stratified train/valid/test Parquet.

Reads every CSV / CSV.gz / Parquet part under --data, checks each against the
dataset config (columns, types, target, ids), turns the missing marker into NaN
and categoricals into integer codes, and splits deterministically. Memory: each
part is downcast to float32 as soon as it is read and the parts are concatenated
once, so a 600k-row data set never exists as several float64 copies.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from steps._cli import StepError, StepParser, run_step, validated, write_json
from steps.dataset import DatasetConfig, ResolvedDataset, encode_categories, load_config
from steps.params import SplitParams, TrainParams
from steps.prepared import DATASET_FILE, PROFILE_FILE, split_path
from steps.profile import profile_frame

ACCEPTED = (".csv", ".csv.gz", ".parquet")


@dataclass
class Part:
    name: str
    columns: list[str]
    ids: np.ndarray | None
    target: np.ndarray
    features: dict[str, np.ndarray]


def discover_parts(data: Path) -> list[Path]:
    """Data files under data, sorted; hidden files and markers (_SUCCESS) are skipped."""
    if not data.is_dir():
        raise StepError(f"--data {data}: not a folder")
    found = []
    for path in sorted(data.rglob("*")):
        relative = path.relative_to(data)
        if any(part.startswith((".", "_")) for part in relative.parts) or not path.is_file():
            continue
        if not path.name.lower().endswith(ACCEPTED):
            raise StepError(
                f"{relative}: not a data file; accepted: {', '.join(ACCEPTED)} "
                "(hidden files and names starting with '_' are ignored)"
            )
        found.append(path)
    if not found:
        raise StepError(f"--data {data}: no data files (accepted: {', '.join(ACCEPTED)})")
    return found


def read_part(path: Path, name: str):
    """One part as a DataFrame, or StepError saying why the file is not readable data."""
    import pandas as pd

    with readable_part(path, name):
        if path.name.lower().endswith(".parquet"):
            return pd.read_parquet(path)
        return pd.read_csv(path, low_memory=False)


@contextmanager
def readable_part(path: Path, name: str) -> Iterator[None]:
    """Check the file's first bytes, then map what a reader raises inside the block to
    a StepError naming the file (batch scoring reads parts in chunks under it)."""
    import pandas as pd

    lower = path.name.lower()
    try:
        if lower.endswith(".parquet"):
            with path.open("rb") as handle:
                if handle.read(4) != b"PAR1":
                    raise StepError(f"{name}: not a Parquet file (no PAR1 header)")
        else:
            opener = gzip.open if lower.endswith(".gz") else open
            with opener(path, "rb") as handle:
                head = handle.read(65536)
            if b"\x00" in head or not _is_text(head):
                raise StepError(f"{name}: not a CSV text file (binary content)")
        yield
    except StepError:
        raise
    except (gzip.BadGzipFile, EOFError) as exc:
        raise StepError(f"{name}: not a gzip-compressed CSV ({exc})") from None
    except pd.errors.EmptyDataError:
        raise StepError(f"{name}: empty file (a CSV needs a header row and data)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        kind = "Parquet" if lower.endswith(".parquet") else "CSV"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StepError(f"{name}: not readable as {kind} ({first})") from None


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 4  # a multi-byte character cut at the boundary


def check_part(frame, name: str, config: DatasetConfig, features: list[str]) -> Part:
    """Validate one part and downcast it; errors name the file, the column and a value."""
    from steps.dataset import coerce_feature

    columns = [str(c) for c in frame.columns]
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise StepError(f"{name}: repeated column name(s) {', '.join(dupes)}")
    if config.target_column not in frame.columns:
        raise StepError(
            f"{name}: target column {config.target_column!r} is missing "
            f"(columns: {_shorten(columns)}); set target_column in the dataset config"
        )
    if config.id_column is not None and config.id_column not in frame.columns:
        raise StepError(
            f"{name}: id column {config.id_column!r} is missing; set id_column in the "
            "dataset config (null for none)"
        )
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise StepError(
            f"{name}: missing feature column(s) {', '.join(missing)} "
            f"({len(missing)} of {len(features)} expected)"
        )
    target = _check_target(frame[config.target_column], name, config.target_column)
    ids = None
    if config.id_column is not None:
        id_series = frame[config.id_column]
        if id_series.isna().any():
            row = int(np.flatnonzero(id_series.isna().to_numpy())[0])
            raise StepError(f"{name}: id column {config.id_column!r} is empty at row {row + 1}")
        ids = id_series.to_numpy()
    converted = {}
    for column in features:
        converted[column] = coerce_feature(
            frame[column],
            kind=config.type_of(column),
            column=column,
            source=name,
            marker=config.missing_marker,
        )
    return Part(name=name, columns=columns, ids=ids, target=target, features=converted)


def _check_target(series, name: str, column: str) -> np.ndarray:
    import pandas as pd

    numeric = pd.to_numeric(series, errors="coerce")
    bad = numeric.isna() | ~numeric.isin([0, 1])
    if bad.any():
        example = series[bad].iloc[0]
        shown = "empty" if pd.isna(example) else repr(_plain_id(example))
        raise StepError(
            f"{name}: target column {column!r} must be 0 or 1; found {shown} "
            f"({int(bad.sum())} such row(s))"
        )
    return numeric.to_numpy().astype("int8")


def _shorten(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def combine(parts: list[Part], config: DatasetConfig, features: list[str]):
    """Concatenate the parts once; encode text categories; check ids and classes."""
    first = parts[0]
    for part in parts[1:]:
        if set(part.columns) != set(first.columns):
            only_first = sorted(set(first.columns) - set(part.columns))
            only_this = sorted(set(part.columns) - set(first.columns))
            raise StepError(
                f"{part.name} and {first.name} have different columns: "
                f"only in {first.name}: {_shorten(only_first) or '-'}; "
                f"only in {part.name}: {_shorten(only_this) or '-'}"
            )
    types = {f: config.type_of(f) for f in features}
    columns: dict[str, np.ndarray] = {}
    categories: dict[str, list[str]] = {}
    for name in features:
        arrays = [p.features.pop(name) for p in parts]
        if any(a.dtype == object for a in arrays):
            text = np.concatenate([a if a.dtype == object else _codes_as_text(a) for a in arrays])
            vocabulary = sorted({v for v in text if v is not None})
            categories[name] = vocabulary
            columns[name] = encode_categories(text, vocabulary)
        else:
            columns[name] = np.concatenate(arrays)
        del arrays
    target = np.concatenate([p.target for p in parts])
    ids = np.concatenate([p.ids for p in parts]) if config.id_column is not None else None
    if ids is not None:
        _check_unique_ids(ids, parts, config.id_column)
    dataset = ResolvedDataset(config=config, features=features, types=types, categories=categories)
    return dataset, columns, target, ids


def _codes_as_text(values: np.ndarray) -> np.ndarray:
    return np.array([None if np.isnan(v) else str(int(v)) for v in values], dtype=object)


def _check_unique_ids(ids: np.ndarray, parts: list[Part], column: str) -> None:
    import pandas as pd

    series = pd.Series(ids)
    repeated = series.duplicated(keep=False).to_numpy()
    if not repeated.any():
        return
    distinct = int(series[repeated].nunique())
    example = series[repeated].iloc[0]
    positions = np.flatnonzero((series == example).to_numpy())
    bounds = np.cumsum([len(p.target) for p in parts])
    files = sorted({parts[int(np.searchsorted(bounds, i, side="right"))].name for i in positions})
    raise StepError(
        f"duplicate ids in column {column!r}: {distinct} id(s) occur more than once, "
        f"e.g. {_plain_id(example)} ({len(positions)} times, in {', '.join(files)}); "
        "ids must be unique"
    )


def _plain_id(value):
    return value.item() if hasattr(value, "item") else value


def stratified_split(
    target: np.ndarray, *, valid_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Row indices per split: the same class mix in each, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    chosen: dict[str, list[np.ndarray]] = {"train": [], "valid": [], "test": []}
    for label in (0, 1):
        rows = np.flatnonzero(target == label)
        rng.shuffle(rows)
        n_test = max(1, round(len(rows) * test_fraction))
        n_valid = max(1, round(len(rows) * valid_fraction))
        if len(rows) - n_test - n_valid < 1:
            raise StepError(
                f"class {label} has only {len(rows)} row(s): train, valid and test each need "
                "at least one row of each class; bring more data"
            )
        chosen["test"].append(rows[:n_test])
        chosen["valid"].append(rows[n_test : n_test + n_valid])
        chosen["train"].append(rows[n_test + n_valid :])
    return {name: np.sort(np.concatenate(parts)) for name, parts in chosen.items()}


def write_split(
    path: Path,
    index: np.ndarray,
    columns: dict[str, np.ndarray],
    target: np.ndarray,
    ids: np.ndarray | None,
    dataset: ResolvedDataset,
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = {}
    if ids is not None:
        data[dataset.config.id_column] = pa.array(ids[index])
    data[dataset.config.target_column] = pa.array(target[index])
    for name in dataset.features:
        data[name] = pa.array(columns[name][index])
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.table(data), tmp)
    tmp.replace(path)


def prepare(data: Path, config: DatasetConfig, split: SplitParams, seed: int, out: Path) -> dict:
    files = discover_parts(data)
    parts: list[Part] = []
    features: list[str] | None = None
    for path in files:
        name = str(path.relative_to(data))
        frame = read_part(path, name)
        if features is None:
            features = config.feature_columns([str(c) for c in frame.columns])
            if not features:
                raise StepError(f"{name}: no feature columns besides the id and the target")
        print(f"prep: read {name} ({len(frame)} rows)", file=sys.stderr)
        parts.append(check_part(frame, name, config, features))
        del frame
    dataset, columns, target, ids = combine(parts, config, features)
    del parts
    rows = len(target)
    if rows < split.min_rows:
        raise StepError(
            f"too few rows: {rows} in {len(files)} file(s); at least {split.min_rows} are needed "
            "(--min-rows)"
        )
    positives = int(target.sum())
    if positives in (0, rows):
        raise StepError(
            f"target column {config.target_column!r} has a single class ({int(target[0])}) in all "
            f"{rows} rows; both 0 and 1 are needed"
        )
    splits = stratified_split(
        target, valid_fraction=split.valid_fraction, test_fraction=split.test_fraction, seed=seed
    )
    out.mkdir(parents=True, exist_ok=True)
    for name, index in splits.items():
        write_split(split_path(out, name), index, columns, target, ids, dataset)
    write_json(out / PROFILE_FILE, profile_frame(columns, target, dataset))
    write_json(out / DATASET_FILE, dataset.model_dump(mode="json"))
    summary = {
        "rows": rows,
        "positive_rate": positives / rows,
        "train_rows": int(len(splits["train"])),
        "valid_rows": int(len(splits["valid"])),
        "test_rows": int(len(splits["test"])),
        "features": len(dataset.features),
        "files": len(files),
        "file_names": [str(p.relative_to(data)) for p in files],
    }
    write_json(out / "summary.json", summary)
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = StepParser(
        prog="python -m steps.prep",
        description="Validate, clean and split training data into Parquet train/valid/test.",
    )
    parser.add_argument("--data", type=Path, required=True, help="Folder with the data parts.")
    parser.add_argument(
        "--dataset-config", type=Path, help="JSON/YAML dataset config (default: Porto Seguro)."
    )
    parser.add_argument("--valid-fraction", type=float, required=True, help="Validation share.")
    parser.add_argument("--test-fraction", type=float, required=True, help="Test share.")
    parser.add_argument("--min-rows", type=int, required=True, help="Fewer rows fail the step.")
    parser.add_argument("--seed", type=int, required=True, help="Seed of the split.")
    parser.add_argument("--out", type=Path, required=True, help="Output folder.")
    return parser


def _run(args: argparse.Namespace) -> None:
    split = validated(
        SplitParams,
        {
            "valid_fraction": args.valid_fraction,
            "test_fraction": args.test_fraction,
            "min_rows": args.min_rows,
        },
    )
    seed = validated(TrainParams, {"seed": args.seed}).seed
    config = load_config(args.dataset_config)
    summary = prepare(args.data, config, split, seed, args.out)
    print(
        f"prep: {summary['rows']} rows, positive rate {summary['positive_rate']:.4f}, "
        f"train/valid/test {summary['train_rows']}/{summary['valid_rows']}/{summary['test_rows']}",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    return run_step(_run, _parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
