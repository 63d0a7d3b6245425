"""Runs one pipeline run on this machine: each node its own process, in dependency
order, independent nodes at the same time (train and score_champion).

The executor waits on the step processes themselves (`os.wait4`, which also gives
the peak RSS), so the next node starts the moment its inputs exist: there is no
polling between steps. Each step runs in its own process group, so cancel stops a
step and anything it started.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.definition import DefinitionError, PipelineDefinition
from pipeline.run_store import RunStore, utc_now
from pipeline.runs import RunRecord

REPO_ROOT = Path(__file__).resolve().parent.parent
_ERROR_PREFIX = "error: "
_LOG_TAIL_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class StepEvent:
    """A step changed state; `status` is running, completed, failed, skipped or canceled."""

    run_id: str
    node: str
    status: str
    duration_s: float | None = None
    error: str | None = None
    peak_rss_mb: float | None = None


Progress = Callable[[StepEvent], None]


# A Python other than this one to run the steps with, e.g. a virtualenv built from
# pipeline/environment/conda.yaml (the Azure ML step environment); default: this one.
STEP_PYTHON_VARIABLE = "AML_TRIGGER_STEP_PYTHON"


def step_environment(home: Path, experiment: str) -> dict[str, str]:
    """What every step process gets on top of this process's environment (the
    contract: MLflow on the home's SQLite store unless MLFLOW_TRACKING_URI names a
    server, the home, the repo on PYTHONPATH)."""
    home = Path(home).resolve()
    tracking = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    return {
        "MLFLOW_TRACKING_URI": tracking,
        "MLFLOW_REGISTRY_URI": os.environ.get("MLFLOW_REGISTRY_URI") or tracking,
        "MLFLOW_EXPERIMENT_NAME": experiment,
        "AML_TRIGGER_HOME": str(home),
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONUNBUFFERED": "1",
    }


class LocalExecutor:
    def __init__(
        self,
        definition: PipelineDefinition,
        store: RunStore,
        *,
        experiment: str = "aml-trigger",
        kill_grace_s: float = 5.0,
        cancel_check: Callable[[], bool] | None = None,
        python: str | None = None,
    ) -> None:
        self.definition = definition
        self.python = python or os.environ.get(STEP_PYTHON_VARIABLE) or None
        self.store = store
        self.experiment = experiment
        self.kill_grace_s = kill_grace_s
        self._cancel_check = cancel_check
        self._canceled = False

    def cancel(self) -> None:
        """Stop the run. Only sets a flag, so it is safe in a signal handler; the
        executor kills the running steps within a fraction of a second."""
        self._canceled = True

    def execute(
        self, run_id: str, inputs: Mapping[str, Any], *, progress: Progress | None = None
    ) -> RunRecord:
        """Run every node of `run_id` and put the run in a terminal state. The run
        must already be recorded (status queued or running)."""
        try:
            resolved = self.definition.resolve_inputs(inputs)
        except DefinitionError as exc:
            self.store.finish_run(run_id, "failed", error=str(exc))
            return self.store.get(run_id)
        return _Run(self, run_id, resolved, progress).run()


class _Run:
    """The state of one execution; lives for the duration of `execute`."""

    def __init__(
        self,
        executor: LocalExecutor,
        run_id: str,
        inputs: dict[str, Any],
        progress: Progress | None,
    ) -> None:
        self.executor = executor
        self.definition = executor.definition
        self.store = executor.store
        self.run_id = run_id
        self.inputs = inputs
        self.progress = progress
        self.outputs = {
            (n, o): self.store.output_dir(run_id, n, o)
            for n, node in self.definition.nodes.items()
            for o in node.component.outputs
        }
        self.status = {n: "pending" for n in self.definition.order()}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started: dict[str, float] = {}
        self.finished: queue.Queue[tuple[str, int, float | None]] = queue.Queue()
        self.errors: dict[str, str] = {}
        env = dict(os.environ)
        env.update(step_environment(self.store.home, executor.experiment))
        self.env = env
        # Relative paths written by a step (MLflow's default ./mlruns artifact root)
        # land in one stable place rather than in whichever folder a run started from.
        self.cwd = self.store.home / "mlflow"

    # -- the loop ----------------------------------------------------------------
    def run(self) -> RunRecord:
        self.cwd.mkdir(parents=True, exist_ok=True)
        canceled = False
        last_check = time.monotonic()
        while True:
            if self.executor._canceled:
                canceled = True
                break
            self._start_ready()
            if not self.procs:
                break
            try:
                node, code, rss = self.finished.get(timeout=0.2)
            except queue.Empty:
                # Cancel from another process arrives as a signal (cancel()); the
                # flag in the store covers a signal that could not be delivered.
                if self.executor._cancel_check and time.monotonic() - last_check > 1.0:
                    last_check = time.monotonic()
                    if self.executor._cancel_check():
                        self.executor.cancel()
                continue
            self._finish(node, code, rss)
        if canceled:
            self._kill_running()
        for node, state in self.status.items():
            if state == "pending":
                self._set(node, "canceled" if canceled else "skipped")
        if canceled:
            status, error = "canceled", "canceled by request"
        elif self.errors:
            status = "failed"
            first = next(n for n in self.definition.order() if n in self.errors)
            error = f"{first}: {self.errors[first]}"
        else:
            status, error = "completed", None
        self.store.finish_run(self.run_id, status, error=error, results=self._results())
        return self.store.get(self.run_id)

    def _start_ready(self) -> None:
        for node in self.definition.order():
            if self.status[node] != "pending":
                continue
            deps = [self.status[d] for d in self.definition.nodes[node].depends_on]
            if any(s in {"failed", "skipped", "canceled"} for s in deps):
                self._set(node, "skipped")
            elif all(s == "completed" for s in deps):
                self._launch(node)

    def _launch(self, node: str) -> None:
        log_path = self.store.log_path(self.run_id, node)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            argv = self.definition.argv(
                node, self.inputs, self.outputs, python=self.executor.python
            )
        except DefinitionError as exc:
            self._fail(node, str(exc), duration=0.0)
            return
        for (owner, _), path in self.outputs.items():
            if owner == node:
                path.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.cwd,
                    env=self.env,
                    start_new_session=True,
                )
            except OSError as exc:
                self._fail(node, f"cannot start {argv[0]}: {exc.strerror}", duration=0.0)
                return
        self.procs[node] = proc
        self.started[node] = time.monotonic()
        self.status[node] = "running"
        self.store.update_step(
            self.run_id,
            node,
            status="running",
            started_at=utc_now(),
            log_path=str(log_path),
            pid=proc.pid,
        )
        self._emit(StepEvent(self.run_id, node, "running"))
        threading.Thread(target=self._wait, args=(node, proc), daemon=True).start()

    def _wait(self, node: str, proc: subprocess.Popen[bytes]) -> None:
        # wait4 rather than proc.wait(): it also returns the step's peak RSS.
        _, status, usage = os.wait4(proc.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code  # keeps Popen from waiting on a reaped pid
        self.finished.put((node, code, usage.ru_maxrss / 1024.0))

    def _finish(self, node: str, code: int, rss_mb: float | None) -> None:
        self.procs.pop(node, None)
        duration = round(time.monotonic() - self.started[node], 3)
        if code == 0:
            # A step that ran but had nothing to do (check_drift said skip, the gate did
            # not promote) is recorded as skipped; its dependents still run, as on Azure ML.
            shown = "skipped" if self._skipped_itself(node) else "completed"
            self.status[node] = "completed"
            self.store.update_step(
                self.run_id,
                node,
                status=shown,
                finished_at=utc_now(),
                duration_s=duration,
                exit_code=0,
                peak_rss_mb=rss_mb,
            )
            self._emit(StepEvent(self.run_id, node, shown, duration, None, rss_mb))
            return
        if self.executor._canceled:
            self.status[node] = "canceled"  # it was stopping because we asked it to
            self.store.update_step(
                self.run_id, node, status="canceled", finished_at=utc_now(),
                duration_s=duration, exit_code=code, peak_rss_mb=rss_mb,
            )  # fmt: skip
            self._emit(StepEvent(self.run_id, node, "canceled", duration, None, rss_mb))
            return
        message = step_error(self.store.log_path(self.run_id, node), code)
        self._fail(node, message, duration=duration, code=code, rss_mb=rss_mb)

    def _skipped_itself(self, node: str) -> bool:
        for (owner, _), path in self.outputs.items():
            if owner == node:
                summary = _read_summary(path / "summary.json") or {}
                if summary.get("skipped_reason") or summary.get("skipped") is True:
                    return True
        return False

    def _fail(
        self,
        node: str,
        message: str,
        *,
        duration: float,
        code: int | None = None,
        rss_mb: float | None = None,
    ) -> None:
        self.status[node] = "failed"
        self.errors[node] = message
        self.store.update_step(
            self.run_id,
            node,
            status="failed",
            finished_at=utc_now(),
            duration_s=duration,
            exit_code=code,
            error=message,
            peak_rss_mb=rss_mb,
        )
        self._emit(StepEvent(self.run_id, node, "failed", duration, message, rss_mb))

    def _kill_running(self) -> None:
        for proc in self.procs.values():
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.executor.kill_grace_s
        while self.procs:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                for proc in self.procs.values():
                    _signal_group(proc.pid, signal.SIGKILL)
                remaining = 10.0
                deadline = time.monotonic() + remaining
            try:
                node, code, rss = self.finished.get(timeout=remaining)
            except queue.Empty:
                continue
            self.procs.pop(node, None)
            duration = round(time.monotonic() - self.started[node], 3)
            self.status[node] = "canceled"
            self.store.update_step(
                self.run_id,
                node,
                status="canceled",
                finished_at=utc_now(),
                duration_s=duration,
                exit_code=code,
                peak_rss_mb=rss,
            )
            self._emit(StepEvent(self.run_id, node, "canceled", duration, None, rss))

    def _set(self, node: str, status: str) -> None:
        self.status[node] = status
        self.store.update_step(self.run_id, node, status=status)
        self._emit(StepEvent(self.run_id, node, status))

    def _emit(self, event: StepEvent) -> None:
        if self.progress is None:
            return
        try:
            self.progress(event)
        except Exception:  # noqa: BLE001 - a broken progress display must not stop a run
            pass

    def _results(self) -> dict[str, Any]:
        summaries = {}
        for (node, _), path in self.outputs.items():
            summary = _read_summary(path / "summary.json")
            if summary is not None:
                summaries[node] = summary
        return summarize(summaries, self.inputs)


def summarize(summaries: Mapping[str, dict[str, Any]], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The run's key figures from the steps' summary.json files (the contract keys)."""
    results: dict[str, Any] = {"extra": {"summaries": dict(summaries)}}
    selection = (summaries.get("select_best") or {}).get("selection")
    if selection:
        results["extra"]["sweep"] = selection  # every candidate's figures and the winner
    drift = summaries.get("check_drift")
    if drift:
        results["extra"]["drift"] = drift
    evaluation = summaries.get("evaluate") or {}
    metrics = evaluation.get("metrics") or {}
    results["metrics"] = {
        k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and v == v
    }
    if "decision" in evaluation:
        results["gate"] = {
            "decision": evaluation.get("decision"),
            "reasons": list(evaluation.get("reasons") or []),
            "metric": inputs.get("gate_metric"),
            "champion_version": evaluation.get("champion_version"),
            "champion_metrics": evaluation.get("champion_metrics"),
        }
    registration = summaries.get("register") or {}
    if registration.get("model_version") is not None:
        results["model_version"] = str(registration["model_version"])
        results["extra"]["promoted"] = bool(registration.get("promoted"))
    deployment = summaries.get("deploy") or {}
    if deployment.get("scoring_uri"):
        results["endpoint"] = deployment["scoring_uri"]
    if "smoke_test" in summaries:
        results["extra"]["smoke_test"] = summaries["smoke_test"]
    return results


def step_error(log_path: Path, code: int) -> str:
    """The step's own message: its last `error: ` line, else its last line."""
    try:
        with open(log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(0, size - _LOG_TAIL_BYTES))
            tail = log.read().decode("utf-8", "replace")
    except OSError:
        tail = ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    if lines and lines[0].startswith("$ "):
        lines = lines[1:]  # the command line the executor wrote
    for line in reversed(lines):
        if line.startswith(_ERROR_PREFIX):
            return line[len(_ERROR_PREFIX) :].strip()
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        return f"killed by signal {name}" + (f" (last output: {lines[-1]})" if lines else "")
    if lines:
        return lines[-1]
    return f"exited with code {code} and no output"


def _read_summary(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
