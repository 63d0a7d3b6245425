"""batch_score: a folder of new rows -> Parquet predictions (id, probability, model version).

Scores with the registered champion (steps/champion.py) or a given model version.
The parts are found, sniffed and validated as prep does (steps/prep.py,
ResolvedDataset.clean), but read in chunks of --chunk-rows: only one chunk's raw
and cleaned frames exist at a time, so 600k rows never sit in memory as a whole
frame, let alone twice. A target column, if present, is ignored.

Output (--out): one `part-NNNNN.parquet` per input part, in input order, plus
summary.json mapping each part to its input file. Everything is written to a
hidden temporary folder first and moved into place at the end, so a failure (a bad
value in the last part, duplicate ids) leaves no partial predictions behind.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steps._cli import StepError, StepParser, run_step, write_json
from steps.prep import discover_parts, readable_part

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from steps.dataset import ResolvedDataset

DEFAULT_CHUNK_ROWS = 50_000
ROW_COLUMN = "row"  # the id column of the output when the model's dataset has no id column
MIN_CHUNK_ROWS, MAX_CHUNK_ROWS = 100, 1_000_000


def resolve_version(client: Any, model_name: str, model_version: str) -> str:
    """The version to score with: the given one (checked), or the champion."""
    from mlflow.exceptions import MlflowException

    from steps.champion import current_champion

    if not model_version:
        version = current_champion(client, model_name)
        if version is None:
            raise StepError(
                f"model {model_name!r} has no champion yet: train one first "
                "(aml-trigger run) or give --model-version"
            )
        return version
    if not model_version.isdigit():
        raise StepError(f"--model-version {model_version!r}: accepted: a version number, e.g. 3")
    try:
        client.get_model_version(model_name, model_version)
    except MlflowException as exc:
        if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"}:
            raise StepError(
                f"model {model_name!r} has no version {model_version} in the registry"
            ) from None
        raise
    return model_version


def iter_chunks(path: Path, name: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The rows of one part, `chunk_rows` at a time; unreadable files name themselves."""
    with readable_part(path, name):
        if path.name.lower().endswith(".parquet"):
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(path)
            for batch in parquet.iter_batches(batch_size=chunk_rows):
                yield batch.to_pandas()
            return
        import pandas as pd

        with pd.read_csv(path, chunksize=chunk_rows, low_memory=False) as reader:
            yield from reader


def chunk_ids(frame: pd.DataFrame, dataset: ResolvedDataset, name: str, first_row: int):
    """The id values of a chunk (checked non-empty), or running row numbers if no id."""
    import numpy as np

    column = dataset.config.id_column
    if column is None:
        return np.arange(first_row, first_row + len(frame), dtype="int64")
    if column not in frame.columns:
        raise StepError(
            f"{name}: id column {column!r} is missing (the model's dataset config names it; "
            "predictions are keyed by it)"
        )
    ids = frame[column]
    empty = ids.isna().to_numpy()
    if empty.any():
        row = first_row + int(np.flatnonzero(empty)[0])
        raise StepError(f"{name}: id column {column!r} is empty at row {row + 1}")
    return ids.to_numpy()


def check_unique(ids_by_part: list[tuple[str, np.ndarray]], column: str) -> None:
    """Duplicate ids make predictions ambiguous to join back; name one and its files."""
    import numpy as np
    import pandas as pd

    if not ids_by_part:
        return
    series = pd.Series(np.concatenate([ids for _, ids in ids_by_part]))
    repeated = series.duplicated(keep=False).to_numpy()
    if not repeated.any():
        return
    example = series[repeated].iloc[0]
    files = [name for name, ids in ids_by_part if (pd.Series(ids) == example).any()]
    count = int((series == example).sum())
    shown = example.item() if hasattr(example, "item") else example
    raise StepError(
        f"duplicate ids in column {column!r}: {int(series[repeated].nunique())} id(s) occur "
        f"more than once, e.g. {shown!r} ({count} times, in {', '.join(files)}); "
        "ids must be unique"
    )


def score_part(
    model: Any,
    dataset: ResolvedDataset,
    path: Path,
    name: str,
    dest: Path,
    version: str,
    chunk_rows: int,
) -> np.ndarray:
    """Score one part chunk by chunk into `dest`; returns its ids (for the unique check)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    id_name = dataset.config.id_column or ROW_COLUMN
    writer = None
    ids_seen: list[np.ndarray] = []
    rows = 0
    try:
        for frame in iter_chunks(path, name, chunk_rows):
            ids = chunk_ids(frame, dataset, name, rows)
            features = dataset.clean(frame, source=name)
            del frame
            probabilities = np.asarray(model.predict(features), dtype="float64").reshape(-1)
            del features
            table = pa.table(
                {
                    id_name: pa.array(ids),
                    "probability": pa.array(probabilities),
                    "model_version": pa.array([version] * len(ids), type=pa.string()),
                }
            )
            if writer is None:
                writer = pq.ParquetWriter(dest, table.schema)
            elif table.schema != writer.schema:
                table = _conform(table, writer.schema, name, id_name)
            writer.write_table(table)
            ids_seen.append(ids)
            rows += len(ids)
    finally:
        if writer is not None:
            writer.close()
    if rows == 0:
        raise StepError(f"{name}: no rows (a data file needs a header row and data)")
    return np.concatenate(ids_seen)


def _conform(table: Any, schema: Any, name: str, id_name: str) -> Any:
    """Chunks of one CSV may infer different id types (e.g. int then text)."""
    try:
        return table.cast(schema)
    except Exception:  # noqa: BLE001 - pyarrow raises several kinds; the message says what
        raise StepError(
            f"{name}: id column {id_name!r} changes type inside the file "
            f"({schema.field(id_name).type} first, then {table.schema.field(id_name).type})"
        ) from None


def batch_score(
    data: Path,
    out: Path,
    *,
    model_name: str,
    model_version: str = "",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> dict[str, Any]:
    from steps.tracking import configure_registry

    if not MIN_CHUNK_ROWS <= chunk_rows <= MAX_CHUNK_ROWS:
        raise StepError(
            f"--chunk-rows={chunk_rows}: accepted: {MIN_CHUNK_ROWS} to {MAX_CHUNK_ROWS}"
        )
    files = discover_parts(data)
    configure_registry()
    import mlflow

    from steps.champion import model_version_uri
    from steps.metrics import load_model

    client = mlflow.MlflowClient()
    version = resolve_version(client, model_name, model_version)
    model, dataset = load_model(model_version_uri(client, model_name, version))
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".staging-"))
    try:
        parts: list[dict[str, Any]] = []
        ids_by_part: list[tuple[str, Any]] = []
        for index, path in enumerate(files):
            name = str(path.relative_to(data))
            output = f"part-{index:05d}.parquet"
            ids = score_part(model, dataset, path, name, staging / output, version, chunk_rows)
            parts.append({"file": name, "rows": int(len(ids)), "output": output})
            if dataset.config.id_column is not None:
                ids_by_part.append((name, ids))
            print(f"batch_score: {name}: {len(ids)} rows", file=sys.stderr)
            del ids
        check_unique(ids_by_part, dataset.config.id_column or ROW_COLUMN)
        del ids_by_part
        for old in out.glob("part-*.parquet"):
            old.unlink()  # an earlier scoring of more parts must not linger
        for part in parts:
            (staging / part["output"]).replace(out / part["output"])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seconds = time.perf_counter() - started
    rows = sum(p["rows"] for p in parts)
    summary = {
        "model_name": model_name,
        "model_version": version,
        "rows": rows,
        "files": len(parts),
        "parts": parts,
        "id_column": dataset.config.id_column or ROW_COLUMN,
        "columns": [dataset.config.id_column or ROW_COLUMN, "probability", "model_version"],
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds, 1) if seconds > 0 else None,
    }
    write_json(out / "summary.json", summary)
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = StepParser(
        prog="python -m steps.batch_score",
        description="Score a folder of CSV/CSV.gz/Parquet parts with the champion or a "
        "given model version; write Parquet predictions.",
    )
    parser.add_argument("--data", type=Path, required=True, help="Folder with the data parts.")
    parser.add_argument("--model-name", required=True, help="Registered model name.")
    parser.add_argument(
        "--model-version", default="", help="Version to score with; empty = the champion."
    )
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=DEFAULT_CHUNK_ROWS,
        help=f"Rows read and scored at a time (default {DEFAULT_CHUNK_ROWS}).",
    )
    parser.add_argument("--out", type=Path, required=True, help="Output folder.")
    return parser


def _run(args: argparse.Namespace) -> None:
    summary = batch_score(
        args.data,
        args.out,
        model_name=args.model_name,
        model_version=args.model_version,
        chunk_rows=args.chunk_rows,
    )
    print(
        f"batch_score: {summary['rows']} rows in {summary['files']} file(s) scored with "
        f"{summary['model_name']} v{summary['model_version']} "
        f"({summary['rows_per_second']} rows/s)",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    return run_step(_run, _parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
