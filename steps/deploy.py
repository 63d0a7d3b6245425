"""deploy: put the newly promoted champion behind the endpoint, blue/green.

Skipped (exit 0, with the reason) when the target is `none` or the gate did not
promote the candidate: the current champion keeps serving. When a deployment
fails its smoke test the old deployment keeps serving and the version's promotion
is revoked (steps/champion.py), so the registry never names a model the endpoint
refused. Right before the traffic shift the champion is read again: if a rival
promotion outranked this version meanwhile, traffic stays where it is, the new
deployment goes as after a failed smoke test, the version's promotion is revoked,
and the step is skipped (exit 0) with `superseded_by` in its summary.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from steps._cli import StepError, StepParser, read_json, run_step, write_json

TARGETS = ("none", "local", "aci", "aks")


def deploy(
    registration: Path, prepared: Path, target: str, endpoint_name: str, out: Path
) -> dict[str, Any]:
    if target not in TARGETS:
        raise StepError(f"--target={target!r}: accepted: {', '.join(TARGETS)}")
    reg = read_json(registration / "summary.json", what="register output")
    summary: dict[str, Any] = {
        "target": target,
        "endpoint_name": endpoint_name,
        "scoring_uri": None,
        "deployment": None,
        "model_version": reg.get("model_version"),
        "skipped_reason": None,
    }
    if reg.get("skipped_reason"):
        summary["skipped_reason"] = f"{reg['skipped_reason']}; the current champion keeps serving"
    elif target == "none":
        summary["skipped_reason"] = "deploy_target is none"
    elif not reg.get("promoted"):
        summary["skipped_reason"] = (
            f"v{reg.get('model_version')} was not promoted ({reg.get('reason')}); "
            "the current champion keeps serving"
        )
    if summary["skipped_reason"]:
        write_json(out / "summary.json", summary)
        return summary

    from steps.smoke_test import sample_rows
    from steps.tracking import configure_registry

    configure_registry()
    import mlflow

    from steps.champion import Superseded, current_champion

    model_name, version = reg["model_name"], str(reg["model_version"])
    rows = sample_rows(prepared)

    def read_champion() -> str | None:  # the rule register and evaluate apply
        return current_champion(mlflow.MlflowClient(), model_name)

    try:
        if target == "local":
            summary.update(_deploy_local(endpoint_name, model_name, version, rows, read_champion))
        else:
            from steps.online_endpoint import deploy_online

            summary = deploy_online(
                target=target,
                endpoint_name=endpoint_name,
                model_name=model_name,
                model_version=version,
                sample_rows=rows,
                out_dir=out,
                read_champion=read_champion,
            )
    except Superseded as exc:
        summary.update(_superseded(mlflow.MlflowClient(), model_name, exc))
        write_json(out / "summary.json", summary)
        return summary
    except Exception as exc:
        from steps.register import restore_champion

        message = str(exc) if isinstance(exc, StepError) else f"{type(exc).__name__}: {exc}"
        undone = restore_champion(
            mlflow.MlflowClient(),
            model_name=model_name,
            failed_version=version,
            previous_version=reg.get("previous_champion_version"),
            reason=message,
        )
        raise StepError(
            f"deploy to {target} endpoint {endpoint_name!r}: {message}; {undone}"
        ) from None
    write_json(out / "summary.json", summary)
    return summary


def _superseded(client: Any, model_name: str, exc: Any) -> dict[str, Any]:
    """Skip, not fail: the champion is someone else's and the endpoint still serves
    what it served. This version's promotion is revoked so that, should the rival's
    own deploy fail and be rolled back, the champion falls back to what is serving,
    never to this version that never got traffic."""
    from steps.champion import revoke

    try:
        client.set_model_version_tag(model_name, exc.version, "deploy", "superseded")
        revoke(client, model_name, exc.version, f"superseded before the traffic shift: {exc}")
        revoked = f"v{exc.version}'s promotion revoked"
    except Exception as error:  # noqa: BLE001 - the endpoint is right either way; say so
        revoked = f"revoking v{exc.version}'s promotion failed ({type(error).__name__}: {error})"
    return {
        "scoring_uri": None,
        "deployment": None,
        "superseded_by": exc.champion,
        "skipped_reason": (
            f"{exc} at the traffic shift (another run promoted meanwhile); "
            f"{exc.cleanup}; traffic not shifted; {revoked}"
        ),
    }


def _deploy_local(
    endpoint_name: str, model_name: str, version: str, rows: list, read_champion: Any
) -> dict[str, Any]:
    import mlflow

    from steps.champion import model_version_uri
    from steps.local_endpoint import deploy_local

    home = Path(os.environ.get("AML_TRIGGER_HOME") or ".local").resolve()
    with tempfile.TemporaryDirectory(prefix="aml-trigger-model-") as tmp:
        source = Path(
            mlflow.artifacts.download_artifacts(
                model_version_uri(mlflow.MlflowClient(), model_name, version), dst_path=tmp
            )
        )
        info = deploy_local(
            home=home,
            endpoint_name=endpoint_name,
            model_name=model_name,
            model_version=version,
            model_source=source,
            sample_rows=rows,
            read_champion=read_champion,
        )
    return {
        "scoring_uri": info["scoring_uri"],
        "deployment": info["deployment"],
        "model_version": info["model_version"],
    }


def _parser() -> argparse.ArgumentParser:
    parser = StepParser(
        prog="python -m steps.deploy",
        description="Deploy the promoted champion blue/green (local, aci, aks) or skip.",
    )
    parser.add_argument(
        "--registration", type=Path, required=True, help="register's output folder."
    )
    parser.add_argument("--prepared", type=Path, required=True, help="prep's output folder.")
    parser.add_argument("--target", required=True, help="none, local, aci or aks.")
    parser.add_argument("--endpoint-name", required=True, help="Endpoint to deploy behind.")
    parser.add_argument("--out", type=Path, required=True, help="Output folder.")
    return parser


def _run(args: argparse.Namespace) -> None:
    summary = deploy(args.registration, args.prepared, args.target, args.endpoint_name, args.out)
    if summary.get("skipped_reason"):
        print(f"deploy: skipped: {summary['skipped_reason']}", file=sys.stderr)
    else:
        print(
            f"deploy: v{summary['model_version']} live on {summary['deployment']} at "
            f"{summary['scoring_uri']}",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    return run_step(_run, _parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
