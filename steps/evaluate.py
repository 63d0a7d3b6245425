"""evaluate: the candidate's test metrics and the ChampionGate's decision.

Writes summary.json (contract keys) and decision.json (the decision alone, for
register and for people). The metrics are also logged to the training run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from steps._cli import StepParser, read_json, run_step, write_json
from steps.gate import ChampionGate
from steps.params import GateKpis, add_gate_flags, gate_kpis


def evaluate(
    prepared: Path, model_dir: Path, champion_dir: Path, kpis: GateKpis, out: Path
) -> dict[str, Any]:
    from steps.metrics import load_model, score_split
    from steps.tracking import configure_tracking
    from steps.train import MODEL_DIR

    train_summary = read_json(model_dir / "summary.json", what="train output")
    champion = read_json(champion_dir / "summary.json", what="score_champion output")
    if train_summary.get("skipped_reason"):
        # No candidate (check_drift said skip): no decision, so nothing is registered.
        summary = {"metrics": {}, "champion_version": None, "champion_metrics": None,
                   "reasons": [], "gate": kpis.model_dump(),
                   "skipped_reason": train_summary["skipped_reason"]}  # fmt: skip
        write_json(out / "summary.json", summary)
        return summary
    configure_tracking()
    model, dataset = load_model(str(model_dir / MODEL_DIR))
    metrics = score_split(model, dataset, prepared)
    gate = ChampionGate.from_kpis(kpis)
    decision = gate.decide(
        metrics,
        champion=champion.get("metrics"),
        champion_version=champion.get("champion_version"),
        champion_note=champion.get("note"),
    )
    summary = {
        "metrics": metrics,
        "champion_version": champion.get("champion_version"),
        "champion_metrics": champion.get("metrics"),
        "decision": decision.decision,
        "reasons": list(decision.reasons),
        "gate": kpis.model_dump(),
    }
    run_id = train_summary.get("mlflow_run_id")
    if run_id:
        import mlflow

        client = mlflow.MlflowClient()
        for name, value in metrics.items():
            client.log_metric(run_id, f"test_{name}", value)
        client.set_tag(run_id, "gate", decision.decision)
    write_json(
        out / "decision.json",
        {k: summary[k] for k in ("decision", "reasons", "champion_version", "gate")},
    )
    write_json(out / "summary.json", summary)
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = StepParser(
        prog="python -m steps.evaluate",
        description="Score the candidate on the test split and apply the ChampionGate.",
    )
    parser.add_argument("--prepared", type=Path, required=True, help="prep's output folder.")
    parser.add_argument("--model", type=Path, required=True, help="train's output folder.")
    parser.add_argument(
        "--champion", type=Path, required=True, help="score_champion's output folder."
    )
    add_gate_flags(parser)
    parser.add_argument("--out", type=Path, required=True, help="Output folder.")
    return parser


def _run(args: argparse.Namespace) -> None:
    kpis = gate_kpis(args)
    summary = evaluate(args.prepared, args.model, args.champion, kpis, args.out)
    if summary.get("skipped_reason"):
        print(f"evaluate: skipped: {summary['skipped_reason']}", file=sys.stderr)
        return
    print(
        f"evaluate: test AUC {summary['metrics']['auc']:.4f}: {summary['decision']}. "
        + " ".join(summary["reasons"]),
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    return run_step(_run, _parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
