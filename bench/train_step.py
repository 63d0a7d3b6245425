"""The train step's own cost: the step (its own process, the command the pipeline's
train node runs, default parameters with early stopping) against a bare
`lightgbm.train` (bench/train_baselines.py) on the same prepared Parquet, same
parameters, for as many rounds as the step trained.

Both run with one LightGBM thread: on a shared 2-core machine, OpenMP threads that
lose their core spin and wait, and identical multi-threaded fits were seen to vary
fivefold in wall time, which drowns what is measured here (the step's work around
the fit). Each is timed from process start to exit (wall) and by the CPU seconds it
used (user + system, from os.wait4), alternately `REPEATS` times; the median ratios
are the figures (aim <= 1.2x). What the step adds: MLflow (imported in a thread
while LightGBM trains), the run's parameters and metrics, the signature and input
example, and the model saved once and uploaded as run artifacts.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.pipeline import generate
from bench.sweep import REPO, _command, _env, prepare, warm_up
from steps.params import TrainParams

REPEATS = 3
THREADS = 1


def _timed(argv: list[str], home: Path, log: Path) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, stdout) of one process."""
    t0 = time.perf_counter()
    with open(log, "w") as out, open(log.with_suffix(".err"), "w") as err:
        proc = subprocess.Popen(argv, cwd=REPO, env=_env(home), stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode:
        tail = log.with_suffix(".err").read_text()[-3000:]
        raise SystemExit(f"{' '.join(argv[:3])} failed:\n{tail}")
    return wall, usage.ru_utime + usage.ru_stime, log.read_text()


def main(rows: int, seed: int, work: Path) -> None:
    data, home = work / "data", work / "home"
    generate(rows, seed, data)
    prepared = prepare(data, work)
    warm_up(home)  # check_drift has created the store before train runs in a pipeline
    params = TrainParams(num_threads=THREADS).model_dump()
    values = {"prepared": str(prepared), **params, "slot": 0, "candidate_count": 1,
              "overrides": ""}  # fmt: skip
    walls, cpus = [], []
    print(
        f"== train step vs bare lightgbm.train ({rows:,} rows, {THREADS} LightGBM thread; "
        f"load {os.getloadavg()[0]:.1f})"
    )
    for attempt in range(REPEATS):
        out = work / f"train-{attempt}"
        step_wall, step_cpu, _ = _timed(
            _command("train", values, {"model": out}), home, work / f"step-{attempt}.log"
        )
        summary = json.loads((out / "summary.json").read_text())
        rounds = summary["rounds_trained"]
        bare_wall, bare_cpu, printed = _timed(
            [sys.executable, "-m", "bench.train_baselines", "lightgbm",
             "--prepared", str(prepared), "--rounds", str(rounds),
             "--num-threads", str(THREADS)],
            home, work / f"bare-{attempt}.log",
        )  # fmt: skip
        bare = json.loads(printed.strip().splitlines()[-1])
        walls.append(step_wall / bare_wall)
        cpus.append(step_cpu / bare_cpu)
        print(
            f"  {attempt + 1}: step {step_wall:6.2f} s wall {step_cpu:6.2f} s CPU (fit "
            f"{summary['train_seconds']:.2f} s, {rounds} rounds) | bare {bare_wall:6.2f} s wall "
            f"{bare_cpu:6.2f} s CPU (fit {bare['fit_s']:.2f} s) | ratio wall {walls[-1]:.2f} "
            f"CPU {cpus[-1]:.2f}"
        )
    print(
        f"  median ratio train step / bare lightgbm.train: wall {statistics.median(walls):.2f}x "
        f"(range {min(walls):.2f}-{max(walls):.2f}), CPU {statistics.median(cpus):.2f}x "
        f"(range {min(cpus):.2f}-{max(cpus):.2f}); load after {os.getloadavg()[0]:.1f}"
    )
