"""Training candidates side by side vs one after another, with the real train step.

Generates data, runs prep once, then trains the same candidates three ways with the
exact command the pipeline's train slots run (train.yaml's command, resolved by the
local executor's own code):

  one after another   each candidate alone with num_threads 0 (all cores): the baseline
  side by side        all at once, num_threads = thread_share(candidates, cores): what
                      a local run with candidates does
  side by side, 0     all at once with all cores each: why the share matters (OpenMP
                      threads of different processes spin against each other)

Prints each mode's wall time, its ratio to the baseline, the slowest candidate, the
longest LightGBM boosting time inside a candidate (train_seconds of its summary), the
largest single peak RSS and the sum of the peaks (an upper bound of what the machine
held at once when they run together). The MLflow store is created before timing
starts, so no mode pays for its schema migrations. The load average is printed: the
machine is shared, and the ratios only mean something against it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from pipeline.definition import load_pipeline, resolve_command
from pipeline.local_executor import step_environment
from steps.candidates import format_overrides, thread_share
from steps.params import TrainParams

REPO = Path(__file__).resolve().parent.parent
# Three candidates that differ where a tuning run would: tree size and learning rate.
CANDIDATES = [
    {"num_leaves": 15, "learning_rate": 0.1},
    {"num_leaves": 31, "learning_rate": 0.05},
    {"num_leaves": 63, "learning_rate": 0.05},
]
# A fixed amount of work per candidate (no early stopping), so the modes compare the
# same boosting and only the scheduling differs.
SHARED = {"num_boost_round": 150, "early_stopping_rounds": 0}


def _command(node: str, values: dict, outputs: dict) -> list[str]:
    component = load_pipeline().nodes[node].component
    full = {n: s.default for n, s in component.inputs.items() if s.default is not None}
    full.update(values)
    return resolve_command(component.command, full, outputs, python=sys.executable)


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, **step_environment(home, "bench-sweep")}


def prepare(data: Path, work: Path) -> Path:
    out = work / "prepared"
    argv = _command("prep", {"data": str(data)}, {"prepared": out})
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=REPO, env=_env(work / "home"), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    print(f"prep: {time.perf_counter() - t0:.1f} s")
    return out


def warm_up(home: Path) -> None:
    """Create the MLflow SQLite store (its migrations take seconds) outside the timing."""
    code = "from steps.tracking import configure_tracking; configure_tracking()"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(home), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def _train_argv(prepared: Path, slot: int, count: int, threads: int, out: Path) -> list[str]:
    params = TrainParams(**SHARED)
    overrides = {**CANDIDATES[slot], "num_threads": threads}
    values = {
        "prepared": str(prepared),
        **params.model_dump(),
        "slot": slot,
        "candidate_count": count,
        "overrides": format_overrides(overrides),
    }
    return _command("train" if slot == 0 else f"train_{slot}", values, {"model": out})


def _run_all(argvs: list[list[str]], home: Path, logs: Path, *, together: bool) -> dict:
    """Wall time, each process's seconds and peak RSS (MB), from os.wait4."""
    logs.mkdir(parents=True, exist_ok=True)
    started: dict[int, tuple[int, float]] = {}
    seconds: dict[int, float] = {}
    rss: dict[int, float] = {}
    t0 = time.perf_counter()

    def launch(index: int) -> None:
        with open(logs / f"slot{index}.log", "wb") as log:
            proc = subprocess.Popen(argvs[index], cwd=REPO, env=_env(home), stdout=log,
                                    stderr=subprocess.STDOUT)  # fmt: skip
        started[proc.pid] = (index, time.perf_counter())

    def reap() -> None:
        pid, status, usage = os.wait4(-1, 0)
        index, begun = started.pop(pid)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"slot {index} failed; see {logs / f'slot{index}.log'}")
        seconds[index] = time.perf_counter() - begun
        rss[index] = usage.ru_maxrss / 1024.0

    if together:
        for index in range(len(argvs)):
            launch(index)
        while started:
            reap()
    else:
        for index in range(len(argvs)):
            launch(index)
            reap()
    return {"wall": time.perf_counter() - t0, "seconds": seconds, "rss": rss}


def main(rows: int, seed: int, work: Path) -> None:
    cores = os.cpu_count() or 1
    count = len(CANDIDATES)
    data = work / "data"
    print(f"== training candidates: {count} on {rows:,} rows, {cores} cores, "
          f"{SHARED['num_boost_round']} rounds each")  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "cli.main", "sample-data", "--rows", str(rows),
         "--seed", str(seed), "--out", str(data)],
        cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    print(f"generated in {time.perf_counter() - t0:.1f} s")
    prepared = prepare(data, work)
    warm_up(work / "home")
    print("load average before: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    share = thread_share(count, cores)
    modes = [
        ("one after another", 0, False),
        (f"side by side, {share} thread(s) each", share, True),
        ("side by side, all cores each", 0, True),
    ]
    results = {}
    for label, threads, together in modes:
        key = label.split(",")[0] + str(threads)
        argvs = [
            _train_argv(prepared, slot, count, threads, work / key / f"slot{slot}")
            for slot in range(count)
        ]
        result = _run_all(argvs, work / "home", work / key / "logs", together=together)
        result["boost"] = [
            json.loads((work / key / f"slot{slot}" / "summary.json").read_text())["train_seconds"]
            for slot in range(count)
        ]
        results[label] = result
    base = results["one after another"]["wall"]
    print(f"{'mode':<34} {'wall s':>7} {'ratio':>6} {'slowest s':>9} {'boost s':>8} "
          f"{'max RSS':>8} {'sum RSS':>8}")  # fmt: skip
    for label, result in results.items():
        print(
            f"{label:<34} {result['wall']:7.1f} {result['wall'] / base:6.2f} "
            f"{max(result['seconds'].values()):9.1f} {max(result['boost']):8.1f} "
            f"{max(result['rss'].values()):7.0f}M {sum(result['rss'].values()):7.0f}M"
        )
    print("load average after: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    print("ratio = wall / one-after-another wall (< 1: the candidates finish sooner together)")


if __name__ == "__main__":
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aml-trigger-bench-sweep-") as folder:
        main(args.rows, args.seed, Path(folder))
