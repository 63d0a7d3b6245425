"""The whole pipeline on generated Porto Seguro-shaped data, through the real CLI.

Prints: wall time and each step's time; orchestration overhead (run wall time not
spent inside any step's process); each step's start-up cost (its imports, read from
Python's own -X importtime output in the step log); each step's peak RSS; the train
step against a bare lightgbm.train and scikit-learn's HistGradientBoosting on the
same prepared Parquet, in the same run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "cli.main"]


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end] intervals (parallel steps overlap)."""
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total


def import_seconds(log_text: str) -> float:
    """Sum of top-level cumulative import times in a log written with -X importtime."""
    total_us = 0
    for line in log_text.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        fields = line.split("|")
        if len(fields) != 3:
            continue
        name = fields[2]
        if len(name) - len(name.lstrip(" ")) == 1:  # top level: one space, no nesting
            total_us += int(fields[1].strip())
    return total_us / 1e6


def generate(rows: int, seed: int, out: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [*CLI, "sample-data", "--rows", str(rows), "--seed", str(seed), "--out", str(out)],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def run_pipeline(data: Path, home: Path) -> dict:
    env = dict(os.environ, AML_TRIGGER_HOME=str(home), PYTHONPROFILEIMPORTTIME="1")
    log = home.parent / "run-cli.log"
    t0 = time.perf_counter()
    with open(log, "w") as sink:
        proc = subprocess.run(
            [*CLI, "run", "--data", str(data), "--deploy", "local"],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    cli_wall = time.perf_counter() - t0
    env.pop("PYTHONPROFILEIMPORTTIME")
    runs = json.loads(
        subprocess.run(
            [*CLI, "runs", "--json", "--limit", "1"],
            cwd=REPO, env=env, capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    run_id = runs[0]["run_id"]
    record = json.loads(
        subprocess.run(
            [*CLI, "show", run_id, "--json"],
            cwd=REPO, env=env, capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    if proc.returncode != 0 or record["status"] != "completed":
        tail = log.read_text()[-3000:]
        raise SystemExit(f"pipeline run failed ({record['status']}): {record.get('error')}\n{tail}")
    record["cli_wall_s"] = cli_wall
    return record


def report(record: dict) -> dict:
    steps = [s for s in record["steps"] if s.get("started_at") and s.get("finished_at")]
    wall = _ts(record["finished_at"]) - _ts(record["started_at"])
    inside = union_seconds([(_ts(s["started_at"]), _ts(s["finished_at"])) for s in steps])
    print(f"== pipeline run {record['run_id']}: {record['status']}")
    print(f"  {'step':<16}{'time':>9}{'imports':>10}{'peak RSS':>12}")
    imports_total = 0.0
    for step in record["steps"]:
        log_path = step.get("log_path")
        imports = import_seconds(Path(log_path).read_text()) if log_path else 0.0
        imports_total += imports
        rss = step.get("peak_rss_mb")
        shown_rss = f"{rss:8.0f} MB" if rss else "     n/a   "
        print(
            f"  {step['name']:<16}{(step.get('duration_s') or 0):8.2f}s"
            f"{imports:9.2f}s{shown_rss:>12}"
        )
    overhead = wall - inside
    print(f"  run wall time (executor)            {wall:8.2f} s")
    print(f"  inside step processes (union)       {inside:8.2f} s")
    print(f"  orchestration overhead              {overhead:8.2f} s  ({overhead / wall:.1%})")
    print(f"  steps' start-up (imports, summed)   {imports_total:8.2f} s")
    print(f"  CLI wall time (incl. its start)     {record['cli_wall_s']:8.2f} s")
    print(f"  metrics: {json.dumps(record.get('metrics'))}")
    print(f"  gate: {(record.get('gate') or {}).get('decision')}  model version "
          f"{record.get('model_version')}  endpoint {record.get('endpoint')}")  # fmt: skip
    return {"wall_s": wall, "overhead_s": overhead}


def _output(home: Path, run_id: str, node: str, name: str) -> Path:
    return home / "runs" / run_id / "outputs" / node / name


def _baseline(which: str, prepared: Path, *extra: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.train_baselines", which, "--prepared", str(prepared), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _line(label: str, wall: float, rss: float | None, detail: str = "") -> None:
    shown = f"{rss:6.0f} MB" if rss else "   n/a   "
    print(f"  {label:<30}{wall:7.2f} s  peak {shown}  {detail}")


def baselines(record: dict, home: Path) -> None:
    run_id = record["run_id"]
    prepared = _output(home, run_id, "prep", "prepared")
    summary = json.loads((_output(home, run_id, "train", "model") / "summary.json").read_text())
    step = next(s for s in record["steps"] if s["name"] == "train")
    rounds = summary.get("rounds_trained") or summary["best_iteration"]
    lgb = _baseline("lightgbm", prepared, "--rounds", str(rounds))
    hgb = _baseline("sklearn", prepared, "--rounds", str(rounds))
    print("== train step vs baselines (same prepared Parquet, same parameters, same run)")
    _line(
        "train step (its process)",
        step["duration_s"],
        step.get("peak_rss_mb"),
        f"fit {summary['train_seconds']:.2f} s, {rounds} rounds "
        f"(best {summary['best_iteration']}), valid AUC {summary['valid_auc']:.4f}",
    )
    for label, res in (("bare lightgbm.train", lgb), ("sklearn HistGradientBoosting", hgb)):
        _line(
            label + " (process)",
            res["wall_s"],
            res["peak_rss_mb"],
            f"fit {res['fit_s']:.2f} s, {res['rounds']} rounds, test AUC {res['test_auc']:.4f}",
        )
    print(
        f"  ratio train step / bare lightgbm     {step['duration_s'] / lgb['wall_s']:5.2f} x"
        "   (aim: <= 1.1 x)"
    )
    print(f"  ratio sklearn fit / lightgbm fit     {hgb['fit_s'] / lgb['fit_s']:5.2f} x")
