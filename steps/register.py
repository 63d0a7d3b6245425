"""register: the candidate becomes a model version with its lineage; it becomes the
champion (a promotion tag, steps/champion.py) only when the gate promoted it and
nobody else promoted meanwhile.

The version is registered from the training run's artifacts (`runs:/<run>/model`),
as an Azure ML workspace supports it (no logged-models API). A rejected candidate is
registered too (tag gate=rejected) so every trained model can be found, but it is
never promoted. Tagging happens right after the version is created; if it fails the
version is deleted again (deleting a version is supported on a workspace), so no
version exists without its lineage.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from steps._cli import StepError, StepParser, read_json, run_step, unset_text, write_json
from steps.champion import current_champion, promote, revoke


def ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in {"RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"}:
            raise


def lineage_tags(train: dict, evaluation: dict, lineage: dict[str, str]) -> dict[str, str]:
    tags = {key: str(value) for key, value in lineage.items()}
    tags["mlflow_run_id"] = str(train.get("mlflow_run_id", ""))
    tags["gate"] = "promoted" if evaluation["decision"] == "promote" else "rejected"
    tags["gate_compared_with"] = str(evaluation.get("champion_version") or "none")
    for name, value in (evaluation.get("metrics") or {}).items():
        tags[f"test_{name}"] = f"{value:.6f}"
    tags["valid_auc"] = f"{train.get('valid_auc', float('nan')):.6f}"
    tags["best_iteration"] = str(train.get("best_iteration", ""))
    return tags


def register(
    client: Any,
    *,
    model_name: str,
    train: dict,
    evaluation: dict,
    lineage: dict[str, str],
    champion_lock=None,
) -> dict[str, Any]:
    """Create the version, tag it, maybe promote it; returns the summary."""
    model_uri = train.get("model_uri") or f"runs:/{train['mlflow_run_id']}/model"
    ensure_registered_model(client, model_name)
    created = client.create_model_version(
        model_name,
        source=model_uri,
        run_id=train.get("mlflow_run_id"),
        description=" ".join(evaluation.get("reasons", [])),
    )
    version = str(created.version)
    try:
        for key, value in lineage_tags(train, evaluation, lineage).items():
            client.set_model_version_tag(model_name, version, key, value)
    except Exception as exc:
        undo = "it was deleted again; nothing is registered"
        try:
            client.delete_model_version(model_name, version)
        except Exception as cleanup:
            undo = f"deleting it again failed too ({cleanup}); delete v{version} by hand"
        raise StepError(
            f"model {model_name!r} v{version}: tagging the new version failed ({exc}); {undo}"
        ) from None

    summary: dict[str, Any] = {
        "model_name": model_name,
        "model_version": version,
        "promoted": False,
        "decision": evaluation["decision"],
        "previous_champion_version": evaluation.get("champion_version"),
        "reason": None,
    }
    if evaluation["decision"] != "promote":
        summary["reason"] = "rejected by the gate: " + " ".join(evaluation.get("reasons", []))
        return summary
    expected = evaluation.get("champion_version")
    with champion_lock if champion_lock is not None else contextlib.nullcontext():
        current = promote(client, model_name, version, expected)
    if current is not None:
        summary["previous_champion_version"] = current
        summary["reason"] = (
            f"not promoted: evaluate compared against champion "
            f"{_label(expected)}, but the champion is now {_label(current)} (another run "
            "promoted meanwhile); the champion was left alone"
        )
        client.set_model_version_tag(model_name, version, "gate", "superseded")
        return summary
    summary["promoted"] = True
    summary["reason"] = f"promoted: v{version} is now the champion (was {_label(expected)})"
    return summary


def skipped_summary(model_name: str, reason: str) -> dict[str, Any]:
    """No candidate was trained (check_drift said skip): nothing registered, champion kept."""
    return {
        "model_name": model_name,
        "model_version": None,
        "promoted": False,
        "decision": None,
        "previous_champion_version": None,
        "reason": reason,
        "skipped_reason": reason,
    }


def _label(version: str | None) -> str:
    return f"v{version}" if version else "none"


def registry_lock():
    """Serialise the champion's compare-and-set between local runs sharing one sqlite
    registry (elsewhere the check-write-re-read of steps/champion.py is all there is)."""
    from steps.tracking import _exclusive, sqlite_path

    db = sqlite_path(os.environ.get("MLFLOW_REGISTRY_URI", ""))
    return _exclusive(db.with_name(db.name + ".champion.lock")) if db else contextlib.nullcontext()


def _parser() -> argparse.ArgumentParser:
    parser = StepParser(
        prog="python -m steps.register",
        description="Register the candidate with lineage tags; make it the champion if "
        "the gate promoted it.",
    )
    parser.add_argument("--model", type=Path, required=True, help="train's output folder.")
    parser.add_argument("--evaluation", type=Path, required=True, help="evaluate's output folder.")
    parser.add_argument("--model-name", required=True, help="Registered model name.")
    for name in ("data-location", "trigger", "run-key", "code-version"):
        parser.add_argument(
            f"--{name}", default="", type=unset_text, help=f"Lineage tag {name.replace('-', '_')}."
        )
    parser.add_argument("--out", type=Path, required=True, help="Output folder.")
    return parser


def _run(args: argparse.Namespace) -> None:
    from steps.tracking import configure_registry

    train = read_json(args.model / "summary.json", what="train output")
    evaluation = read_json(args.evaluation / "summary.json", what="evaluate output")
    if evaluation.get("skipped_reason"):
        summary = skipped_summary(args.model_name, evaluation["skipped_reason"])
        write_json(args.out / "summary.json", summary)
        print(f"register: skipped: {summary['skipped_reason']}", file=sys.stderr)
        return
    configure_registry()
    import mlflow

    lineage = {
        "data_location": args.data_location,
        "trigger": args.trigger,
        "run_key": args.run_key,
        "code_version": args.code_version,
    }
    summary = register(
        mlflow.MlflowClient(),
        model_name=args.model_name,
        train=train,
        evaluation=evaluation,
        lineage=lineage,
        champion_lock=registry_lock(),
    )
    write_json(args.out / "summary.json", summary)
    print(f"register: {args.model_name} v{summary['model_version']}: {summary['reason']}",
          file=sys.stderr)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return run_step(_run, _parser(), argv)


if __name__ == "__main__":
    sys.exit(main())


def restore_champion(
    client: Any, *, model_name: str, failed_version: str, previous_version: str | None, reason: str
) -> str:
    """Undo a promotion whose deployment failed; returns what was done, for messages."""
    client.set_model_version_tag(model_name, failed_version, "deploy", "failed")
    client.set_model_version_tag(model_name, failed_version, "deploy_error", reason[:4000])
    with registry_lock():
        current = current_champion(client, model_name)
        if current != failed_version:
            return f"the champion is {_label(current)} (moved meanwhile), left alone"
        after = revoke(client, model_name, failed_version, f"deploy failed: {reason}")
        if after is None:
            return "the champion was withdrawn (there was no champion before)"
        if previous_version and after != previous_version:
            # The previous champion was itself revoked meanwhile; say who serves now.
            return f"the champion is back on v{after} (v{previous_version} was revoked)"
        return f"the champion is back on v{after}"
