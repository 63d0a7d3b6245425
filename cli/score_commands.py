"""`aml-trigger score`: batch-score a folder of new rows with the champion.

Locally it runs the command of pipeline/batch_scoring_pipeline.yaml's one node,
resolved from the YAML exactly as the local executor resolves the training pipeline
(so it is the command Azure ML runs), as its own process with the embedded MLflow
registry. With --azure it submits a pipeline job of the published batch component
(pipeline/batch_jobs.py) and returns; follow it with `aml-trigger show JOB`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

EXIT_USAGE = 2
EXIT_FAILED = 1
# Inside the data folder, so predictions sit next to the rows they score; the leading
# '_' makes the parts finder skip it, so scoring the folder again never reads them.
PREDICTIONS_DIR = "_predictions"


def register(sub: argparse._SubParsersAction) -> None:
    score = sub.add_parser(
        "score",
        help="Batch-score a folder of new rows with the champion (or a model version).",
        description="Score every CSV / CSV.gz / Parquet part under --data (validated like "
        "training data) with the registered champion, or --model-version, on this machine. "
        f"Writes Parquet predictions (id, probability, model_version) to --out, by default "
        f"<data>/{PREDICTIONS_DIR}/. On Azure ML the same component runs as a pipeline job "
        "(see docs/batch-and-byo.md).",
    )
    score.add_argument(
        "--data",
        required=True,
        help="Folder with the new rows (with --azure: a folder of the incoming datastore).",
    )
    score.add_argument(
        "--model-name", default="porto-seguro-lgbm", help="Registered model name (default "
        "porto-seguro-lgbm).",
    )  # fmt: skip
    score.add_argument(
        "--model-version", default=None, help="Version to score with (default: the champion)."
    )
    score.add_argument(
        "--out", type=Path, default=None, help=f"Output folder (default <data>/{PREDICTIONS_DIR})."
    )
    score.add_argument(
        "--chunk-rows", type=int, default=50_000, help="Rows scored at a time (default 50000)."
    )
    score.add_argument(
        "--azure",
        action="store_true",
        help="Submit a pipeline job of the published batch scoring component to the Azure "
        "ML workspace (AML_* settings); predictions go to <data>/_predictions/<job>/ there.",
    )
    score.add_argument("--compute", help="With --azure: compute target (default AML_COMPUTE).")
    score.add_argument(
        "--component-version",
        help="With --azure: version of aml_trigger_batch_scoring (default: the latest).",
    )
    score.set_defaults(func=cmd_score)


def batch_command(
    data: Path, out: Path, *, model_name: str, model_version: str | None, chunk_rows: int
) -> list[str]:
    """The batch_score node's argv, from the pipeline YAML; DefinitionError if refused."""
    from pipeline.definition import load_pipeline
    from pipeline.publish import BATCH_PIPELINE_YAML

    definition = load_pipeline(BATCH_PIPELINE_YAML)
    given = {"scoring_data": str(data), "model_name": model_name, "chunk_rows": chunk_rows}
    if model_version is not None:
        given["model_version"] = model_version
    inputs = definition.resolve_inputs(given)
    (node,) = definition.order()
    (output,) = definition.nodes[node].component.outputs
    return definition.argv(node, inputs, {(node, output): out})


def cmd_score(args: argparse.Namespace) -> int:
    if args.azure:
        return _score_on_azure(args)
    if args.compute or args.component_version:
        print("error: --compute and --component-version need --azure", file=sys.stderr)
        return EXIT_USAGE
    return _score_locally(args)


def _score_on_azure(args: argparse.Namespace) -> int:
    from pipeline.aml_submitter import AmlSubmitter
    from pipeline.batch_jobs import submit_batch_scoring
    from pipeline.settings import Settings, SettingsError
    from pipeline.submitter import SubmissionError

    if args.out is not None:
        where = f"<data>/{PREDICTIONS_DIR}/<job>/ of the incoming datastore"
        print(f"error: --out is local only; on Azure ML predictions go to {where}", file=sys.stderr)
        return EXIT_USAGE
    try:
        record = submit_batch_scoring(
            AmlSubmitter(Settings.from_env()),
            data=args.data,
            model_name=args.model_name,
            model_version=args.model_version,
            chunk_rows=args.chunk_rows,
            compute=args.compute,
            component_version=args.component_version,
        )
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SubmissionError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    print(f"submitted batch scoring job {record.run_id} ({record.status})")
    print(f"predictions: {record.extra['predictions']}")
    return 0


def _score_locally(args: argparse.Namespace) -> int:
    from pipeline.definition import DefinitionError
    from pipeline.local_executor import step_environment
    from pipeline.settings import Settings, SettingsError

    try:
        home = Path(Settings.from_env().home).resolve()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    data = Path(args.data).resolve()
    if not data.is_dir():
        print(f"error: --data {args.data}: not a folder", file=sys.stderr)
        return EXIT_USAGE
    out = (args.out or data / PREDICTIONS_DIR).resolve()
    try:
        argv = batch_command(
            data,
            out,
            model_name=args.model_name,
            model_version=args.model_version,
            chunk_rows=args.chunk_rows,
        )
    except DefinitionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    workdir = home / "mlflow"  # MLflow may write temp files where it runs; not the user's cwd
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **step_environment(home, "aml-trigger")}
    code = subprocess.call(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL)
    if code != 0:
        return code
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    print(
        f"scored {summary['rows']:,} rows in {summary['files']} file(s) with "
        f"{summary['model_name']} v{summary['model_version']} "
        f"({summary['rows_per_second']:,.0f} rows/s)\npredictions: {out}"
    )
    return 0
