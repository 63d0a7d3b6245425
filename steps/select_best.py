"""select_best: of the train slots' outputs, pass on only the best candidate.

Reads each slot's summary.json, picks the trained candidate with the highest
validation AUC (steps.candidates.pick_best) and copies that slot's whole output
(model/ and summary.json) to its own output, so evaluate and register read exactly
what they read from a single train node. The copy's summary.json gains `selection`:
every candidate's figures and the winner. When no slot trained a model (check_drift
decided against retraining) slot 0's output passes through unchanged.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from steps._cli import StepError, StepParser, read_json, run_step, write_json
from steps.candidates import MAX_CANDIDATES, SELECTION_METRIC, pick_best

_FIGURES = ("valid_auc", "best_iteration", "train_seconds", "mlflow_run_id")


def selection(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The `selection` record (pure): trained candidates in slot order and the winner."""
    winner = pick_best(summaries)
    candidates = []
    for slot, summary in enumerate(summaries):
        if summary.get("skipped") or summary.get(SELECTION_METRIC) is None:
            continue
        entry: dict[str, Any] = {
            "slot": slot,
            "overrides": (summary.get("candidate") or {}).get("overrides", {}),
        }
        entry.update({k: summary.get(k) for k in _FIGURES if k in summary})
        candidates.append(entry)
    return {
        "metric": SELECTION_METRIC,
        "winner": winner,
        "candidates": candidates,
    }


def select(models: list[Path], out: Path) -> dict[str, Any]:
    summaries = [read_json(m / "summary.json", what=f"train slot {i} output")
                 for i, m in enumerate(models)]  # fmt: skip
    chosen = selection(summaries)
    source = models[chosen["winner"] if chosen["winner"] is not None else 0]
    out.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        target = out / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)
    summary = read_json(source / "summary.json", what="the chosen train output")
    summary["selection"] = chosen
    write_json(out / "summary.json", summary)
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = StepParser(
        prog="python -m steps.select_best",
        description="Pass on the train output of the candidate with the best validation AUC.",
    )
    parser.add_argument(
        "--model", type=Path, action="append", required=True,
        help="A train slot's output folder, in slot order (repeat for each slot).",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="Output folder.")
    return parser


def _run(args: argparse.Namespace) -> None:
    if len(args.model) > MAX_CANDIDATES:
        raise StepError(f"--model given {len(args.model)} times; at most {MAX_CANDIDATES} slots")
    summary = select(args.model, args.out)
    chosen = summary["selection"]
    if chosen["winner"] is None:
        print("select_best: no candidate trained a model; slot 0 passes through",
              file=sys.stderr)  # fmt: skip
        return
    figures = ", ".join(
        f"slot {c['slot']} {c.get(SELECTION_METRIC, float('nan')):.4f}"
        for c in chosen["candidates"]
    )
    print(f"select_best: slot {chosen['winner']} wins on {SELECTION_METRIC} ({figures})",
          file=sys.stderr)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return run_step(_run, _parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
