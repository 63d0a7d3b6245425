"""verify_gate: the submitted model's metrics on the verification rows, judged by the
ChampionGate against the KPIs and the champion scored on the same rows.

Runs as the verify pipeline's `evaluate` node and writes evaluate's contract keys
(metrics, champion_version, champion_metrics, decision, reasons, gate), so the run
record, `aml-trigger show` and the callback carry the decision like a training
run's. `promote` here means "passes": a verification registers and deploys nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from steps._cli import StepError, StepParser, read_json, run_step, write_json
from steps.gate import ChampionGate
from steps.params import GateKpis, add_gate_flags, gate_kpis
from steps.verify_endpoint import PREDICTIONS_FILE, load_rows


def champion_on_rows(model_name: str, data: Path, target_column: str, target) -> dict[str, Any]:
    """The champion's version and metrics on the verification rows (nulls + note if none)."""
    import mlflow
    import numpy as np

    from steps.champion import current_champion, model_version_uri
    from steps.metrics import classification_metrics, load_model

    client = mlflow.MlflowClient()
    version = current_champion(client, model_name)
    result: dict[str, Any] = {"champion_version": version, "metrics": None, "note": None}
    if version is None:
        result["note"] = f"model {model_name!r} has no champion yet"
        return result
    try:
        model, dataset = load_model(model_version_uri(client, model_name, version))
        frame, _ = load_rows(data, target_column)
        probabilities = np.asarray(
            model.predict(dataset.clean(frame, source="verification data")), dtype="float64"
        ).reshape(-1)
        result["metrics"] = classification_metrics(target, probabilities)
    except StepError as exc:
        result["note"] = str(exc)
    except Exception as exc:  # a champion that cannot score these rows must not block a verdict
        result["note"] = f"cannot load or score: {type(exc).__name__}: {exc}"[:500]
    return result


def verify_gate(
    scored: Path, data: Path, model_name: str, kpis: GateKpis, out: Path
) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from steps.metrics import classification_metrics
    from steps.tracking import configure_registry

    endpoint = read_json(scored / "summary.json", what="verify_endpoint output")
    table = pq.read_table(scored / PREDICTIONS_FILE)
    target = table.column("target").to_numpy()
    probabilities = table.column("probability").to_numpy()
    if len(set(target.tolist())) < 2:
        raise StepError(
            "verification data has a single class in its target column; both 0 and 1 are "
            "needed to compute the KPIs"
        )
    metrics = classification_metrics(target, probabilities)
    configure_registry()
    champion = champion_on_rows(model_name, data, endpoint["target_column"], target)
    gate = ChampionGate.from_kpis(kpis)
    decision = gate.decide(
        metrics,
        champion=champion["metrics"],
        champion_version=champion["champion_version"],
        champion_note=champion["note"],
    )
    summary = {
        "metrics": metrics,
        "champion_version": champion["champion_version"],
        "champion_metrics": champion["metrics"],
        "decision": decision.decision,
        "reasons": list(decision.reasons),
        "gate": kpis.model_dump(),
        "rows": int(len(target)),
        "verdict": "passed" if decision.promoted else "rejected",
    }
    write_json(out / "summary.json", summary)
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = StepParser(
        prog="python -m steps.verify_gate",
        description="Judge a submitted model's verification scores with the ChampionGate.",
    )
    parser.add_argument("--scored", type=Path, required=True, help="verify_endpoint's output.")
    parser.add_argument("--data", type=Path, required=True, help="Verification data folder.")
    parser.add_argument("--model-name", required=True, help="Registered champion's name.")
    add_gate_flags(parser)
    parser.add_argument("--out", type=Path, required=True, help="Output folder.")
    return parser


def _run(args: argparse.Namespace) -> None:
    kpis = gate_kpis(args)
    summary = verify_gate(args.scored, args.data, args.model_name, kpis, args.out)
    print(
        f"verify_gate: {summary['verdict']} ({kpis.gate_metric} "
        f"{summary['metrics'][kpis.gate_metric]:.4f}). " + " ".join(summary["reasons"]),
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    return run_step(_run, _parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
