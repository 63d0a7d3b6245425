"""Batch scoring: the batch_score step vs plain `model.predict` on one pandas frame.

Both score the same generated rows with the same registered champion, each in a
fresh process (`python -m bench.batch_score step|baseline ...`, which prints its own
figures as JSON): rows/s of the scoring itself (after the model is loaded), the
process's wall time, and its peak RSS. The baseline is what a notebook does: read
every part with pandas, concatenate, clean, predict once, write one Parquet file.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "cli.main"]
MODEL = "bench-batch"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _env(home: Path) -> dict[str, str]:
    from pipeline.local_executor import step_environment

    return {**os.environ, **step_environment(home, "bench-batch")}


def prepare(work: Path, rows: int, seed: int) -> tuple[Path, Path]:
    """New rows to score, and a home whose registry has a champion (small training)."""
    new, train, home = work / "new", work / "train", work / "home"
    for out, n, s in ((new, rows, seed), (train, 20_000, seed + 1)):
        subprocess.run([*CLI, "sample-data", "--rows", str(n), "--seed", str(s), "--out",
                        str(out)], cwd=REPO, check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    subprocess.run(
        [*CLI, "run", "--data", str(train), "--deploy", "none", "--param",
         "num_boost_round=200", "--param", f"model_name={MODEL}"],
        cwd=REPO, env=dict(os.environ, AML_TRIGGER_HOME=str(home)), check=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return new, home


def _child(mode: str, new: Path, home: Path, out: Path) -> dict:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.batch_score", mode, "--data", str(new), "--out", str(out)],
        cwd=REPO, env=_env(home), capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    figures["wall_s"] = wall
    return figures


def main(rows: int, seed: int, work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    new, home = prepare(work, rows, seed)
    print(f"== batch scoring: {rows:,} rows, champion trained in {time.perf_counter() - t0:.1f} s")
    base = _child("baseline", new, home, work / "baseline-out")
    ours = _child("step", new, home, work / "step-out")
    print(f"  {'':<34}{'rows/s':>12}{'scoring':>10}{'process':>10}{'peak RSS':>12}")
    for label, f in (("plain model.predict (one frame)", base), ("batch_score step", ours)):
        print(
            f"  {label:<34}{f['rows'] / f['seconds']:>12,.0f}{f['seconds']:>9.2f}s"
            f"{f['wall_s']:>9.2f}s{f['peak_rss_mb']:>9.0f} MB"
        )
    speed = (ours["rows"] / ours["seconds"]) / (base["rows"] / base["seconds"])
    print(
        f"  step / baseline: throughput x{speed:.2f}, "
        f"peak RSS x{ours['peak_rss_mb'] / base['peak_rss_mb']:.2f}"
    )


def _baseline(data: Path, out: Path) -> dict:
    """The notebook way: whole frame in, one predict, one file out."""
    import numpy as np
    import pandas as pd

    from steps.batch_score import resolve_version
    from steps.metrics import load_model
    from steps.tracking import configure_registry

    configure_registry()
    import mlflow

    version = resolve_version(mlflow.MlflowClient(), MODEL, "")
    model, dataset = load_model(f"models:/{MODEL}/{version}")
    started = time.perf_counter()
    files = sorted(p for p in data.iterdir() if p.suffix == ".csv")
    frame = pd.concat([pd.read_csv(p, low_memory=False) for p in files], ignore_index=True)
    probabilities = np.asarray(model.predict(dataset.clean(frame, source="all")), dtype="float64")
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {"id": frame["id"], "probability": probabilities, "model_version": version}
    ).to_parquet(out / "predictions.parquet", index=False)
    return {"rows": len(frame), "seconds": time.perf_counter() - started}


def _step(data: Path, out: Path) -> dict:
    from steps.batch_score import main as step_main

    code = step_main(["--data", str(data), "--model-name", MODEL, "--out", str(out)])
    if code != 0:
        raise SystemExit(code)
    summary = json.loads((out / "summary.json").read_text())
    return {"rows": summary["rows"], "seconds": summary["seconds"]}


def _cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.batch_score")
    parser.add_argument("mode", choices=["baseline", "step"])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    figures = (_baseline if args.mode == "baseline" else _step)(args.data, args.out)
    figures["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(figures))


if __name__ == "__main__":
    _cli()
