"""The local scoring endpoint (azmlinfsrv + steps/score.py) against `mlflow models
serve` on the same registered model, same machine, same client, same run.

Each server gets one worker. Our endpoint takes raw rows as a client sends them
(-1 for missing) and cleans them as prep did; mlflow's takes the already-cleaned
feature frame, so it does a little less work per row.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from bench.loadgen import run_load
from bench.netutil import free_port, wait_ready

REPO = Path(__file__).resolve().parent.parent


def _raw_rows(data: Path, n: int) -> list[dict]:
    import pandas as pd

    part = sorted(data.glob("part-*.csv*"))[0]
    frame = pd.read_csv(part, nrows=n).drop(columns=["id", "target"], errors="ignore")
    return frame.to_dict(orient="records")


def _clean_rows(prepared: Path, n: int) -> list[dict]:
    import pandas as pd

    from steps.prepared import load_dataset, split_path

    dataset = load_dataset(prepared)
    frame = pd.read_parquet(split_path(prepared, "test"), columns=dataset.features).head(n)
    rows = frame.to_dict(orient="records")
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in rows]  # fmt: skip


def _start_mlflow(home: Path, model_uri: str, port: int) -> subprocess.Popen:
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=f"sqlite:///{home}/mlflow/mlflow.db",
        PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    )
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", model_uri,
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def main(record: dict, home: Path, data: Path, per_client: int = 300) -> None:
    ours = record["endpoint"]
    run_id = record["run_id"]
    prepared = home / "runs" / run_id / "outputs" / "prep" / "prepared"
    model_name = (record.get("request") or {}).get("model_name", "porto-seguro-lgbm")
    port = free_port()
    server = _start_mlflow(home, f"models:/{model_name}/{record['model_version']}", port)
    try:
        wait_ready(f"http://127.0.0.1:{port}/ping")
        theirs = f"http://127.0.0.1:{port}/invocations"
        headers = {"Content-Type": "application/json"}
        print(f"== scoring: ours {ours} vs mlflow models serve (model version "
              f"{record['model_version']}), {per_client} requests per client")  # fmt: skip
        for size in (1, 100):
            ours_body = json.dumps({"data": _raw_rows(data, size)}).encode()
            theirs_body = json.dumps({"dataframe_records": _clean_rows(prepared, size)}).encode()
            for concurrency in (1, 4):
                a = run_load(f"ours  {size:>3}-row", ours, body=ours_body, headers=headers,
                             concurrency=concurrency, per_client=per_client)  # fmt: skip
                b = run_load(f"mlflow {size:>3}-row", theirs, body=theirs_body, headers=headers,
                             concurrency=concurrency, per_client=per_client)  # fmt: skip
                print("  " + a.row())
                print("  " + b.row())
                print(f"  {'ratio ours/mlflow throughput':<34} {a.rps / b.rps:5.2f} x")
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=20)
