"""`python -m bench.drift [--rows N]`: what check_drift costs next to prep.

Prints, for N generated rows (default 600,000): prep's time (the baseline, measured
in the same run), the PSI computation over all 57 features against a champion
profile (steps.drift.measure, in process), and the whole step as the executor runs
it (a fresh process: MLflow import, the registry look-up, the champion's profile
download, the PSI), without and with a champion, each with its ratio to prep.
Nothing is asserted; the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv[:3])} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def _register_champion(env: dict[str, str], profile: Path) -> None:
    """A champion whose run carries the training profile, as train + register leave it."""
    code = (
        "import json, mlflow\n"
        "from steps.tracking import configure_tracking\n"
        "configure_tracking()\n"
        "with mlflow.start_run() as run:\n"
        f"    mlflow.log_dict(json.load(open({str(profile)!r})), 'training_profile.json')\n"
        "client = mlflow.MlflowClient()\n"
        "client.create_registered_model('bench-drift')\n"
        "v = client.create_model_version('bench-drift', source=f'runs:/{run.info.run_id}/m',"
        " run_id=run.info.run_id)\n"
        "from steps.champion import promote\n"
        "promote(client, 'bench-drift', v.version, None)\n"
    )
    _timed([sys.executable, "-c", code], env)


def main(rows: int, seed: int, work: Path) -> None:
    from steps.drift import measure
    from steps.sample_data import write_sample_data

    env = {**os.environ, "PYTHONPATH": str(REPO), "AML_TRIGGER_HOME": str(work / "home")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'home' / 'mlflow' / 'mlflow.db'}"
    old, new = work / "old", work / "new"
    write_sample_data(old, rows=rows, seed=seed, parts=4)
    write_sample_data(new, rows=rows, seed=seed + 1, parts=4, drift=0.5)
    py = sys.executable
    split = ["--valid-fraction", "0.15", "--test-fraction", "0.15", "--min-rows", "1000"]
    _timed([py, "-m", "steps.prep", "--data", str(old), *split, "--seed", "1",
            "--out", str(work / "old-prep")], env)  # fmt: skip
    prep_s = _timed([py, "-m", "steps.prep", "--data", str(new), *split, "--seed", "1",
                     "--out", str(work / "new-prep")], env)  # fmt: skip
    reference = json.loads((work / "old-prep" / "profile.json").read_text())

    started = time.perf_counter()
    figures = measure(work / "new-prep", reference, same_location=False)
    psi_s = time.perf_counter() - started

    _register_champion(env, work / "old-prep" / "profile.json")  # also creates the store

    def step(model: str) -> float:
        return _timed([py, "-m", "steps.drift", "--prepared", str(work / "new-prep"),
                       "--model-name", model, "--retrain-policy", "on_drift",
                       "--drift-psi-threshold", "0.2", "--min-new-rows", "1",
                       "--out", str(work / model)], env)  # fmt: skip

    alone_s = step("bench-none")
    step_s = step("bench-drift")
    decided = json.loads((work / "bench-drift" / "summary.json").read_text())
    value, name = figures.max_psi
    print(f"== check_drift on {rows:,} rows x 57 features (drift 0.5 vs 0)")
    print(f"prep (baseline)                    {prep_s:7.2f} s   1.00")
    print(f"PSI, 57 features (in process)      {psi_s:7.2f} s   {psi_s / prep_s:.2f}")
    print(f"check_drift step, no champion      {alone_s:7.2f} s   {alone_s / prep_s:.2f}")
    print(f"check_drift step, with a champion  {step_s:7.2f} s   {step_s / prep_s:.2f}")
    print(f"max PSI {value:.3f} on {name}; target PSI {figures.target_psi:.4f}; "
          f"step decided {decided['decision']}: {decided['reason']}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.drift", description=__doc__)
    parser.add_argument("--rows", type=int, default=600_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aml-trigger-bench-drift-") as tmp:
        main(args.rows, args.seed, Path(tmp))
