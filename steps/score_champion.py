"""score_champion: the current champion's metrics on the new test split.

Runs beside train so evaluate can compare candidate and champion on exactly the
same rows. No registered model or no champion (steps/champion.py) is normal for a first
run: the summary says so with nulls.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from steps._cli import StepError, StepParser, run_step, write_json


def score_champion(prepared: Path, model_name: str, out: Path) -> dict[str, Any]:
    from steps.tracking import configure_registry

    configure_registry()
    import mlflow

    from steps.champion import current_champion, model_version_uri
    from steps.metrics import load_model, score_split

    client = mlflow.MlflowClient()
    version = current_champion(client, model_name)
    summary: dict[str, Any] = {
        "champion_version": version,
        "metrics": None,
        "model_name": model_name,
        "note": None,
    }
    if version is None:
        summary["note"] = f"model {model_name!r} has no champion yet"
    else:
        # Load by version number: a promotion may land while we score.
        try:
            model, dataset = load_model(model_version_uri(client, model_name, version))
            summary["metrics"] = score_split(model, dataset, prepared)
        except StepError as exc:
            summary["note"] = str(exc)
        except Exception as exc:  # a champion that cannot load must not block a replacement
            summary["note"] = f"cannot load or score: {type(exc).__name__}: {exc}"[:500]
        if summary["note"]:
            print(f"score_champion: warning: v{version}: {summary['note']}", file=sys.stderr)
    write_json(out / "summary.json", summary)
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = StepParser(
        prog="python -m steps.score_champion",
        description="Score the registered champion on the new test split.",
    )
    parser.add_argument("--prepared", type=Path, required=True, help="prep's output folder.")
    parser.add_argument("--model-name", required=True, help="Registered model name.")
    parser.add_argument(
        "--drift", type=Path, help="check_drift's output folder; a skip decision scores nothing."
    )
    parser.add_argument("--out", type=Path, required=True, help="Output folder.")
    return parser


def _run(args: argparse.Namespace) -> None:
    from steps.drift import skip_reason

    skipped = skip_reason(args.drift)
    if skipped:
        summary = {"champion_version": None, "metrics": None, "model_name": args.model_name,
                   "note": skipped, "skipped_reason": skipped}  # fmt: skip
        write_json(args.out / "summary.json", summary)
        print(f"score_champion: skipped: {skipped}", file=sys.stderr)
        return
    summary = score_champion(args.prepared, args.model_name, args.out)
    if summary["metrics"]:
        print(
            f"score_champion: v{summary['champion_version']} AUC {summary['metrics']['auc']:.4f}",
            file=sys.stderr,
        )
    else:
        print(f"score_champion: {summary['note']}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    return run_step(_run, _parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
