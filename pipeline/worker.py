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
from pipeline.run_store import RunStore, WorkerState
from pipeline.runs import RunRecord

HEARTBEAT_INTERVAL_S = 2.0
STALE_AFTER_S = 30.0


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state first), or None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()


def process_identity(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): with the pid, it names one
    process, so a pid recycled after a crash or a reboot is not taken for it."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def process_alive(pid: int, identity: str | None = None) -> bool:
    """True if `pid` exists, is not a zombie (exited, not yet reaped) and, when
    `identity` is given and /proc can tell, is still the same process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _proc_stat(pid)
    if fields is None:
        return True  # no /proc (macOS): existence is all we can know
    if fields[0] == "Z":
        return False
    return identity is None or process_identity(pid) == identity


def worker_alive(state: WorkerState, *, now: float | None = None) -> bool:
    """Whether a `running` run still has a live process behind it.

    A process we can identify (pid + start time) is trusted while it exists, so a
    laptop waking from sleep does not fail its runs; otherwise (no /proc, or the
    worker still starting) a heartbeat older than STALE_AFTER_S means it is gone.
    """
    now = time.time() if now is None else now
    fresh = state.heartbeat is not None and now - state.heartbeat <= STALE_AFTER_S
    if state.pid is None:
        return fresh  # claimed, worker still starting
    if not process_alive(state.pid, state.identity):
        return False
    return fresh or (state.identity is not None and _proc_stat(state.pid) is not None)


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
    if not store.mark_running(run_id, pid=os.getpid(), identity=process_identity(os.getpid())):
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
        cancel_check=lambda: store.liveness(run_id).cancel_requested,
    )
    previous = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: executor.cancel())
    try:
        with Heartbeat(store, run_id):
            if store.liveness(run_id).cancel_requested:
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
    """Make the run's folders local: the data, and a verification's model too.
    Returns an error message or None."""
    for what in ("data", "model"):
        if what in job:
            problem = _stage_folder(settings, store, run_id, what, job[what] or {})
            if problem is not None:
                return problem
    return None


def _stage_folder(
    settings: Any, store: RunStore, run_id: str, what: str, data: dict[str, Any]
) -> str | None:
    kind = data.get("kind")
    where = f"prefix {data.get('prefix', '')!r} of container {data.get('container')!r}"
    if kind in {"folder", "dir"}:
        path = Path(data["path"])
        if not path.is_dir():
            shown = where if kind == "folder" else "the --data folder"
            return f"{what}: {path} does not exist or is not a folder ({shown})"
        return None
    if kind in {"azurite", "azure"}:
        from pipeline.storage import open_storage

        dest = store.run_dir(run_id) / "inputs" / data.get("dest", "training_data")
        dest.mkdir(parents=True, exist_ok=True)
        try:
            files = open_storage(settings).download_prefix(data["container"], data["prefix"], dest)
        except Exception as exc:  # noqa: BLE001 - reported on the run, not raised
            return f"{what}: cannot download the {where}: {type(exc).__name__}: {exc}"
        if not files:
            return f"{what}: no blobs under the {where}"
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
        _announce_end(settings, store, args.run_id)
        # The slot this run held is free: start the next queued run, if any.
        dispatch(settings, store)
    return 0


def _announce_end(settings: Any, store: RunStore, run_id: str) -> None:
    """Tell whoever follows the run that it ended (the trigger service's run_ended
    function, through the local host), as Azure ML does through Event Grid."""
    from pipeline.run_events import publish_run_ended

    try:
        _, job = store.job(run_id)
        publish_run_ended(
            settings.home, store.get(run_id), experiment=job.get("experiment", "aml-trigger")
        )
    except Exception:  # noqa: BLE001 - the safety net settles the run if this is lost
        traceback.print_exc()


if __name__ == "__main__":
    sys.exit(main())
