"""`python -m pipeline.worker --run-id RUN`: executes one claimed run, detached from
whoever submitted it, then starts the next queued run.

The same `execute_run` serves the CLI's foreground `run`. While a run executes,
its process writes a heartbeat into the run store; a `running` run whose process
is gone or whose heartbeat is stale is declared dead by the next LocalSubmitter
(see local_submitter.recover), so a crash never leaves a run `running` forever.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from pipeline.definition import DefinitionError, load_pipeline
from pipeline.local_executor import LocalExecutor, Progress
from pipeline.run_store import RunStore
from pipeline.runs import RunRecord

HEARTBEAT_INTERVAL_S = 2.0
STALE_AFTER_S = 30.0


def process_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie (an exited child nobody reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): existence is all we can know
    return stat.rpartition(")")[2].split()[0] != "Z"


def worker_alive(pid: int | None, heartbeat: float | None, *, now: float | None = None) -> bool:
    """Whether a `running` run still has a live process behind it."""
    now = time.time() if now is None else now
    if heartbeat is None or now - heartbeat > STALE_AFTER_S:
        return False
    # No pid yet: claimed, worker still starting; the fresh heartbeat vouches for it.
    return pid is None or process_alive(pid)


class Heartbeat:
    """Refreshes the run's heartbeat from a background thread while the run executes."""

    def __init__(self, store: RunStore, run_id: str, interval_s: float = HEARTBEAT_INTERVAL_S):
        self.store = store
        self.run_id = run_id
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.store.heartbeat(self.run_id)
            except Exception:  # noqa: BLE001 - a busy database must not kill the run
                pass


def execute_run(
    settings: Any,
    store: RunStore,
    run_id: str,
    *,
    progress: Progress | None = None,
    handle_signals: bool = True,
) -> RunRecord:
    """Execute a run already recorded as `running`, in this process."""
    inputs, job = store.job(run_id)
    if not store.mark_running(run_id, pid=os.getpid()):
        return store.get(run_id)
    try:
        definition = load_pipeline(job["pipeline"])
    except DefinitionError as exc:
        store.finish_run(run_id, "failed", error=str(exc))
        return store.get(run_id)
    executor = LocalExecutor(
        definition,
        store,
        experiment=job.get("experiment", "aml-trigger"),
        cancel_check=lambda: store.liveness(run_id)[2],
    )
    previous = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: executor.cancel())
    try:
        with Heartbeat(store, run_id):
            if store.liveness(run_id)[2]:
                store.finish_run(run_id, "canceled", error="canceled before it started")
                return store.get(run_id)
            problem = _stage_data(settings, store, run_id, job)
            if problem is not None:
                store.finish_run(run_id, "failed", error=problem)
                return store.get(run_id)
            return executor.execute(run_id, inputs, progress=progress)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stage_data(settings: Any, store: RunStore, run_id: str, job: dict[str, Any]) -> str | None:
    """Make the training data a local folder; returns an error message or None."""
    data = job.get("data") or {}
    kind = data.get("kind")
    where = f"prefix {data.get('prefix', '')!r} of container {data.get('container')!r}"
    if kind in {"folder", "dir"}:
        path = Path(data["path"])
        if not path.is_dir():
            shown = where if kind == "folder" else "the --data folder"
            return f"data: {path} does not exist or is not a folder ({shown})"
        return None
    if kind in {"azurite", "azure"}:
        from pipeline.storage import open_storage

        dest = store.run_dir(run_id) / "inputs" / "training_data"
        dest.mkdir(parents=True, exist_ok=True)
        try:
            files = open_storage(settings).download_prefix(data["container"], data["prefix"], dest)
        except Exception as exc:  # noqa: BLE001 - reported on the run, not raised
            return f"data: cannot download the {where}: {type(exc).__name__}: {exc}"
        if not files:
            return f"data: no blobs under the {where}"
        return None
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.worker",
        description="Execute one claimed local pipeline run (started by LocalSubmitter).",
    )
    parser.add_argument("--run-id", required=True, help="The run to execute.")
    args = parser.parse_args(argv)
    # Until the executor takes over SIGTERM, a cancel must not kill this process
    # outright: the cancel flag in the store is read before any step starts.
    signal.signal(signal.SIGTERM, lambda *_: None)

    from pipeline.local_submitter import dispatch
    from pipeline.settings import Settings

    settings = Settings.from_env()
    store = RunStore(settings.home)
    try:
        execute_run(settings, store, args.run_id)
    except Exception as exc:  # noqa: BLE001 - the run must end in a terminal state
        traceback.print_exc()
        store.finish_run(
            args.run_id,
            "failed",
            error=f"worker error: {type(exc).__name__}: {exc}",
            only_if_running=True,
        )
    finally:
        # The slot this run held is free: start the next queued run, if any.
        dispatch(settings, store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
