"""verify_endpoint: a submitted model on a throw-away test endpoint, scored over HTTP.

The model folder is one of two layouts:
- an MLflow model (an `MLmodel` file, at the top or one level down): served with
  steps/verify_mlflow_score.py;
- a model file plus `score.py` with init()/run() (the Azure ML entry script
  contract; AZUREML_MODEL_DIR is the folder) and an optional `requirements.txt`,
  which must already be satisfied here: the local endpoint runs in this
  environment and installs nothing.

The endpoint is the local deploy target's machinery (steps/local_endpoint.py: the
Azure ML inference server on 127.0.0.1, detached), but not blue/green and not under
any endpoint name: it lives in this step's output folder, is smoke tested, gets
every verification row in batches over HTTP, and is stopped before the step ends,
whatever happened. The champion's endpoint is never touched.

`--endpoint managed` (the Azure ML submitter's choice for scoring `endpoint`) puts
the model on a throw-away Azure ML managed online deployment instead
(steps/verify_online.py) and writes the same outputs; the local server is then not
started, and requirements.txt is not checked here (the deployment builds its own
environment).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps._cli import StepError, StepParser, run_step, write_json

MLFLOW_ENTRY_SCRIPT = Path(__file__).resolve().parent / "verify_mlflow_score.py"
BATCH_ROWS = 1000  # under steps/score.py's MAX_ROWS, so our own entry script takes it
PREDICTIONS_FILE = "predictions.parquet"


@dataclass(frozen=True)
class Submission:
    layout: str  # "mlflow" or "script"
    model_dir: Path
    entry_script: Path


def inspect_submission(folder: Path, *, check_requirements: bool = True) -> Submission:
    """Which layout the folder has, or StepError saying what is accepted."""
    if not folder.is_dir():
        raise StepError(f"model {folder}: not a folder")
    mlmodel = sorted(
        (p for p in folder.rglob("MLmodel") if len(p.relative_to(folder).parts) <= 2),
        key=lambda p: len(p.parts),
    )
    if mlmodel:
        return Submission("mlflow", folder, MLFLOW_ENTRY_SCRIPT)
    script = folder / "score.py"
    if script.is_file():
        # A managed deployment builds its own environment; only the local endpoint,
        # which runs in this one, needs the requirements met here.
        problems = unmet_requirements(folder / "requirements.txt") if check_requirements else []
        if problems:
            raise StepError(
                "model requirements.txt: "
                + "; ".join(problems)
                + " (the local test endpoint runs in this environment and installs nothing)"
            )
        scaffolding = {"score.py", "requirements.txt", "conda.yml", "conda.yaml", "environment.yml"}
        others = [p for p in folder.iterdir() if p.name not in scaffolding]
        if not others:
            raise StepError(f"model {folder.name}: score.py but no model file beside it")
        return Submission("script", folder, script)
    names = sorted(p.name for p in folder.iterdir())[:10]
    raise StepError(
        f"model folder holds {names or 'nothing'}; accepted: an MLflow model folder (MLmodel "
        "file) or a model file with score.py (init()/run()) and an optional requirements.txt"
    )


def unmet_requirements(path: Path) -> list[str]:
    """Each requirement line not satisfied by an installed distribution, as a sentence."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import InvalidRequirement, Requirement

    if not path.is_file():
        return []
    problems = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            requirement = Requirement(text)
        except InvalidRequirement as exc:
            problems.append(f"line {number} {text!r} is not a requirement ({exc})")
            continue
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            problems.append(f"{requirement.name} is not installed")
            continue
        if requirement.specifier and installed not in requirement.specifier:
            problems.append(f"{text} needed, {requirement.name} {installed} is installed")
    return problems


def load_rows(data: Path, target_column: str):
    """(raw records frame without the target, target as int8) from every part."""
    import pandas as pd

    from steps.prep import _check_target, discover_parts, read_part

    frames, targets = [], []
    for path in discover_parts(data):
        name = str(path.relative_to(data))
        frame = read_part(path, name)
        if target_column not in frame.columns:
            raise StepError(
                f"{name}: target column {target_column!r} is missing; verification data needs "
                "the label (target_column in the request)"
            )
        targets.append(_check_target(frame.pop(target_column), name, target_column))
        frames.append(frame)
    import numpy as np

    return pd.concat(frames, ignore_index=True), np.concatenate(targets)


def score_over_http(uri: str, frame, *, batch_rows: int = BATCH_ROWS) -> list[float]:
    """Every row through the endpoint, `batch_rows` per request; a bad answer names
    the batch, the status and an excerpt (via the smoke test's checks)."""
    from steps.smoke_test import _check_answer, _post

    probabilities: list[float] = []
    for start in range(0, len(frame), batch_rows):
        batch = frame.iloc[start : start + batch_rows]
        records = json.loads(batch.to_json(orient="records"))  # NaN -> null
        status, body = _post(uri, {"data": records}, {}, 60.0)
        try:
            _check_answer(uri, status, body, len(records))
        except StepError as exc:
            raise StepError(f"rows {start + 1}-{start + len(records)}: {exc}") from None
        answer = json.loads(body)
        if isinstance(answer, str):
            answer = json.loads(answer)
        probabilities.extend(float(p) for p in answer["probabilities"])
    return probabilities


def raised_in_server(log: Path) -> str | None:
    """The last exception the entry script raised, from the server log's traceback
    (the server itself only says that its worker failed to boot)."""
    import re

    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    pattern = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b:?.*")
    found = [line.strip() for line in lines if pattern.match(line)]
    # The server wraps the script's exception in its own; the script's is the news.
    own = [line for line in found if not line.startswith("azureml_inference_server_http")]
    shown = (own or found)[-1:]
    return f"the entry script raised {shown[0][:300]}" if shown else None


def verify_endpoint(
    model: Path,
    data: Path,
    target_column: str,
    out: Path,
    *,
    endpoint: str = "local",
    model_uri: str | None = None,
    model_name: str = "porto-seguro-lgbm",
    ml_client: Any = None,
) -> dict[str, Any]:
    """`ml_client` (managed only): the workspace client; None = the job's own."""
    from steps.local_endpoint import _is_ours, _start_listening, _stop_child
    from steps.smoke_test import smoke_test

    submission = inspect_submission(model, check_requirements=endpoint == "local")
    frame, target = load_rows(data, target_column)
    if endpoint == "managed":
        return _verify_managed(
            submission, frame, target, out, model_uri, model_name, target_column, ml_client
        )
    folder = out / "endpoint"
    folder.mkdir(parents=True, exist_ok=True)
    process = None
    started = time.perf_counter()
    try:
        process, info = _start_listening(
            folder, submission.model_dir, "verify", "submitted", "byo",
            submission.entry_script, 120.0,
        )  # fmt: skip
        uri = info["scoring_uri"]
        sample = json.loads(frame.head(5).to_json(orient="records"))
        smoke = smoke_test(uri, sample)
        probabilities = score_over_http(uri, frame)
    except StepError as exc:
        raised = raised_in_server(folder / "server.log")
        raise StepError(
            f"the submitted model ({submission.layout}) failed on the test endpoint: "
            f"{raised + '; ' if raised else ''}{exc}; the champion's endpoint was not touched"
        ) from None
    finally:
        if process is not None:
            _stop_child(process)
    seconds = time.perf_counter() - started
    _write_predictions(out, target, probabilities)
    summary = {
        "layout": submission.layout,
        "rows": len(probabilities),
        "scoring_uri": uri,
        "smoke_test": smoke,
        "http_seconds": round(seconds, 3),
        "torn_down": not _is_ours(info["pid"]),
        "target_column": target_column,
    }
    write_json(out / "summary.json", summary)
    return summary


def _verify_managed(
    submission: Submission,
    frame,
    target,
    out: Path,
    model_uri: str | None,
    model_name: str,
    target_column: str,
    ml_client: Any,
) -> dict[str, Any]:
    """The same outputs as the local endpoint, from a managed online deployment."""
    from steps.verify_online import BATCH_ROWS as MANAGED_ROWS
    from steps.verify_online import ManagedVerifyError, verify_on_managed_endpoint

    if not model_uri:
        raise StepError("endpoint managed needs --model-uri (the model folder's azureml:// URI)")
    records = json.loads(frame.to_json(orient="records"))  # NaN -> null
    batches = [records[i : i + MANAGED_ROWS] for i in range(0, len(records), MANAGED_ROWS)]
    started = time.perf_counter()
    try:
        probabilities, done = verify_on_managed_endpoint(
            layout=submission.layout,
            model_dir=submission.model_dir,
            model_uri=model_uri,
            model_name=model_name,
            records=batches,
            out=out,
            ml_client=ml_client,
        )
    except ManagedVerifyError as exc:
        raise StepError(f"the submitted model ({submission.layout}) failed: {exc}") from None
    _write_predictions(out, target, probabilities)
    summary = {
        "layout": submission.layout,
        "rows": len(probabilities),
        "endpoint": "managed",
        **done,
        "http_seconds": round(time.perf_counter() - started, 3),
        "target_column": target_column,
    }
    write_json(out / "summary.json", summary)
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = StepParser(
        prog="python -m steps.verify_endpoint",
        description="Deploy a submitted model to a test endpoint, score the verification "
        "data through it over HTTP, tear it down.",
    )
    parser.add_argument("--model", type=Path, required=True, help="The submitted model folder.")
    parser.add_argument("--data", type=Path, required=True, help="Verification data folder.")
    parser.add_argument("--target-column", required=True, help="The 0/1 label column.")
    parser.add_argument(
        "--endpoint",
        choices=("local", "managed"),
        default="local",
        help="local: the inference server in this container; managed: an Azure ML managed "
        "online deployment at 0 %% traffic (inside an Azure ML job).",
    )
    parser.add_argument("--model-uri", help="The model folder's azureml:// URI (managed).")
    parser.add_argument("--model-name", default="porto-seguro-lgbm", help="Champion's name.")
    parser.add_argument("--out", type=Path, required=True, help="Output folder.")
    return parser


def _run(args: argparse.Namespace) -> None:
    summary = verify_endpoint(
        args.model,
        args.data,
        args.target_column,
        args.out,
        endpoint=args.endpoint,
        model_uri=args.model_uri,
        model_name=args.model_name,
    )
    print(
        f"verify_endpoint: {summary['rows']} rows scored over HTTP by the submitted "
        f"{summary['layout']} model in {summary['http_seconds']:.1f} s; test endpoint "
        f"{'stopped' if summary['torn_down'] else 'NOT stopped'}",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    return run_step(_run, _parser(), argv)


def _write_predictions(out: Path, target, probabilities) -> None:
    """The verification's predictions beside their targets, as the gate step reads them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"target": pa.array(target), "probability": pa.array(probabilities)}),
        out / PREDICTIONS_FILE,
    )


if __name__ == "__main__":
    sys.exit(main())
