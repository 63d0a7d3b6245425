"""LocalSubmitter: the embedded default behind the Submitter seam.

`submit` only records the run as `queued` and returns (an HTTP caller is waiting).
A dispatcher then starts queued runs, up to MAX_CONCURRENT_RUNS at once, each in a
detached worker process (`python -m pipeline.worker`) that survives the process
that submitted it; a finishing worker starts the next queued run. The CLI's `run`
executes in the calling process instead, with the same records.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.definition import PIPELINE_YAML, DefinitionError, PipelineDefinition, load_pipeline
from pipeline.local_executor import REPO_ROOT, Progress
from pipeline.run_store import RunStore
from pipeline.runs import RUN_ID_PATTERN, RunRecord
from pipeline.submitter import RunNotFound, SubmissionError
from pipeline.verification import VERIFY_PIPELINE_YAML, AnyRequest, VerificationRequest
from pipeline.worker import execute_run, process_alive, process_identity, worker_alive
from steps.candidates import share_cores

INTERRUPTED = "interrupted: the worker process died"


class LocalSubmitter:
    backend = "local"

    def __init__(self, settings: Any, *, pipeline_path: Path | str | None = None) -> None:
        self.settings = settings
        self.home = Path(settings.home).resolve()
        self.store = RunStore(self.home)
        self.pipeline_path = Path(pipeline_path or PIPELINE_YAML).resolve()
        self._definition: PipelineDefinition | None = None
        self._others: dict[str, PipelineDefinition] = {}  # e.g. the verify pipeline
        # Runs left `running` by a dead worker are failed, and queued runs started.
        dispatch(settings, self.store)

    @property
    def definition(self) -> PipelineDefinition:
        if self._definition is None:
            self._definition = load_pipeline(self.pipeline_path)
        return self._definition

    def definition_of(self, job: dict[str, Any]) -> PipelineDefinition:
        """The pipeline a run executes: the training pipeline, or the one its job names."""
        path = job["pipeline"]
        if path == str(self.pipeline_path):
            return self.definition
        if path not in self._others:
            self._others[path] = load_pipeline(path)
        return self._others[path]

    # -- the Submitter protocol ----------------------------------------------------
    def submit(
        self,
        request: AnyRequest,
        *,
        run_id: str,
        trigger: str,
        idempotency_key: str | None = None,
        data_dir: Path | str | None = None,
        dataset_config: Path | str | None = None,
    ) -> RunRecord:
        """Queue the run and return at once; the dispatcher starts it. `data_dir`
        (a local folder) replaces `request.data` for runs started from the CLI."""
        inputs, job = self._prepare(
            request, run_id, trigger, idempotency_key, data_dir, dataset_config
        )
        record, created = self.store.create_run(
            run_id,
            trigger=trigger,
            idempotency_key=idempotency_key,
            request=request.model_dump(mode="json"),
            inputs=inputs,
            job=job,
            steps=self.definition_of(job).order(),
        )
        if not created:
            return record
        dispatch(self.settings, self.store)
        return self.store.get(run_id)

    def run_foreground(
        self,
        request: AnyRequest,
        *,
        run_id: str,
        trigger: str = "cli",
        idempotency_key: str | None = None,
        data_dir: Path | str | None = None,
        dataset_config: Path | str | None = None,
        progress: Progress | None = None,
    ) -> RunRecord:
        """Execute the run in this process (the CLI's `run`), recording it like any
        other; SIGINT/SIGTERM cancel it. An existing `run_id` is returned, not rerun."""
        inputs, job = self._prepare(
            request, run_id, trigger, idempotency_key, data_dir, dataset_config
        )
        record, created = self.store.create_run(
            run_id,
            trigger=trigger,
            idempotency_key=idempotency_key,
            request=request.model_dump(mode="json"),
            inputs=inputs,
            job=job,
            steps=self.definition_of(job).order(),
            status="running",
        )
        if not created:
            return record
        return execute_run(self.settings, self.store, run_id, progress=progress)

    def get(self, run_id: str) -> RunRecord:
        recover(self.store)
        return self.store.get(run_id)

    def list_runs(self, limit: int = 20) -> list[RunRecord]:
        recover(self.store)
        return self.store.list_runs(limit)

    def cancel(self, run_id: str, *, wait_s: float = 3.0) -> RunRecord:
        """Cancel a queued run at once, or ask a running run's process to stop its
        steps, waiting up to `wait_s` for it to finish."""
        recover(self.store)
        before = self.store.request_cancel(run_id)
        if before == "running":
            worker = self.store.liveness(run_id)
            if worker.pid is not None and worker.pid != os.getpid():
                if process_alive(worker.pid, worker.identity):
                    try:
                        os.kill(worker.pid, signal.SIGTERM)  # the executor's cue to stop
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and not self.store.get(run_id).terminal:
                if worker.pid is not None and not process_alive(worker.pid, worker.identity):
                    break
                time.sleep(0.05)
                if worker.pid is None:
                    worker = self.store.liveness(run_id)
            if not self.store.get(run_id).terminal and not worker_alive(worker):
                _kill_orphan_steps(self.store, run_id)
                self.store.finish_run(
                    run_id, "canceled", error="canceled by request", only_if_running=True
                )
        return self.store.get(run_id)

    def describe(self, request: AnyRequest, *, run_id: str, trigger: str) -> dict:
        """The step commands a run would execute, without recording or starting it."""
        inputs, job = self._prepare(request, run_id, trigger, None, None, None)
        return self._describe(run_id, inputs, job)

    # -- helpers ---------------------------------------------------------------------
    def _describe(self, run_id: str, inputs: dict[str, Any], job: dict[str, Any]) -> dict:
        d = self.definition_of(job)
        resolved = d.resolve_inputs(inputs)
        outputs = {
            (n, o): self.store.output_dir(run_id, n, o)
            for n, node in d.nodes.items()
            for o in node.component.outputs
        }
        return {
            "backend": "local",
            "run_id": run_id,
            "pipeline": d.name,
            "experiment": job["experiment"],
            "inputs": resolved,
            "steps": [
                {
                    "name": n,
                    "component": d.nodes[n].component.name,
                    "depends_on": list(d.nodes[n].depends_on),
                    "command": d.argv(n, resolved, outputs),
                    "log": str(self.store.log_path(run_id, n)),
                }
                for n in d.order()
            ],
        }

    def _prepare(
        self,
        request: AnyRequest,
        run_id: str,
        trigger: str,
        idempotency_key: str | None,
        data_dir: Path | str | None,
        dataset_config: Path | str | None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        from pipeline.version import code_version

        if not re.fullmatch(RUN_ID_PATTERN, run_id):
            raise SubmissionError(
                "invalid_run_id",
                f"run id {run_id!r} must be 3-64 lowercase letters, digits, '_' or '-'",
            )
        if isinstance(request, VerificationRequest):
            return self._prepare_verification(request, run_id)
        container = self.settings.incoming_container
        kind = self.settings.storage_kind
        if data_dir is not None:
            path = Path(data_dir).resolve()
            data = {"kind": "dir", "path": str(path)}
            location = str(path)
        elif kind == "folder":
            path = self.home / "storage" / container / request.data
            data = {"kind": "folder", "container": container, "prefix": request.data}
            data["path"] = str(path)
            location = f"{container}/{request.data}"
        else:
            path = self.store.run_dir(run_id) / "inputs" / "training_data"
            data = {"kind": kind, "container": container, "prefix": request.data}
            location = f"{container}/{request.data}"
        inputs = request.pipeline_inputs(
            data_uri=str(path),
            lineage={
                "trigger": trigger,
                "run_key": idempotency_key or run_id,
                "code_version": code_version(),
            },
            retrain_defaults=self.settings.retrain_defaults,
            **self.settings.deployment_inputs(),
        )
        inputs["data_location"] = location
        # Candidates train side by side on this one machine: each gets its share of the
        # cores (on Azure ML every slot has a node and num_threads stays as asked).
        inputs.update(share_cores(inputs, os.cpu_count() or 1))
        if dataset_config is not None:
            config = Path(dataset_config).resolve()
            if not config.is_file():
                raise SubmissionError(
                    "invalid_request", f"dataset config {config} does not exist or is not a file"
                )
            inputs["dataset_config"] = str(config)
        try:
            self.definition.resolve_inputs(inputs)
        except DefinitionError as exc:
            raise SubmissionError("invalid_request", str(exc)) from None
        job = {"pipeline": str(self.pipeline_path), "experiment": request.experiment, "data": data}
        return inputs, job

    def _prepare_verification(
        self, request: VerificationRequest, run_id: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The verify pipeline's inputs: the model and the data are both folders of the
        incoming container, staged by the worker as training data is."""
        container = self.settings.incoming_container
        kind = self.settings.storage_kind
        staged: dict[str, dict[str, Any]] = {}
        for name, prefix, dest in (("data", request.data, "training_data"),
                                   ("model", request.model, "model")):  # fmt: skip
            spec: dict[str, Any] = {"kind": kind, "container": container, "prefix": prefix}
            if kind == "folder":
                spec["path"] = str(self.home / "storage" / container / prefix)
            else:
                spec["dest"] = dest
                spec["path"] = str(self.store.run_dir(run_id) / "inputs" / dest)
            staged[name] = spec
        inputs = request.pipeline_inputs(
            data_uri=staged["data"]["path"], model_uri=staged["model"]["path"]
        )
        job = {"pipeline": str(VERIFY_PIPELINE_YAML), "experiment": request.experiment, **staged}
        try:
            self.definition_of(job).resolve_inputs(inputs)
        except DefinitionError as exc:
            raise SubmissionError("invalid_request", str(exc)) from None
        return inputs, job


def dispatch(settings: Any, store: RunStore) -> list[str]:
    """Fail runs whose worker died, then start queued runs while there is room.
    Returns the run ids started."""
    recover(store)
    started = []
    while (run_id := store.claim_next(settings.max_concurrent_runs)) is not None:
        try:
            proc = _spawn_worker(settings, store, run_id)
        except OSError as exc:
            store.finish_run(run_id, "failed", error=f"cannot start the worker: {exc}")
            continue
        store.mark_running(run_id, pid=proc.pid, identity=process_identity(proc.pid))
        _children.append(proc)
        started.append(run_id)
    _reap_children()
    return started


def recover(store: RunStore) -> list[str]:
    """Mark `running` runs whose process is gone (or silent too long) as failed,
    stopping any step processes they left behind. Queued runs are left alone."""
    failed = []
    for run_id, worker in store.running_runs():
        if worker_alive(worker):
            continue
        _kill_orphan_steps(store, run_id)
        if store.finish_run(run_id, "failed", error=INTERRUPTED, only_if_running=True):
            failed.append(run_id)
    return failed


# Worker processes this process started; polled so they do not linger as zombies.
_children: list[subprocess.Popen[bytes]] = []


def _reap_children() -> None:
    _children[:] = [p for p in _children if p.poll() is None]


def _spawn_worker(settings: Any, store: RunStore, run_id: str) -> subprocess.Popen[bytes]:
    log = store.run_dir(run_id) / "logs" / "worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(_settings_env(settings, store.home))
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.worker", "--run-id", run_id],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,  # survives the submitter (and its Ctrl-C)
        )


def _settings_env(settings: Any, home: Path) -> dict[str, str]:
    """The settings a worker must see, whether `settings` came from the environment
    or was built in code."""
    env = {
        "PIPELINE_BACKEND": "local",
        "AML_TRIGGER_HOME": str(home),
        "INCOMING_CONTAINER": settings.incoming_container,
        "MAX_CONCURRENT_RUNS": str(settings.max_concurrent_runs),
        "AzureWebJobsStorage": settings.storage_connection.get_secret_value(),
        "PYTHONPATH": str(REPO_ROOT),
    }
    # The account by identity (no connection string) reaches the worker the same way.
    if settings.storage_account_url:
        env["AzureWebJobsStorage__blobServiceUri"] = settings.storage_account_url
    if settings.storage_client_id:
        env["AzureWebJobsStorage__clientId"] = settings.storage_client_id
    return env


def _kill_orphan_steps(store: RunStore, run_id: str) -> None:
    """Kill the process groups of steps a dead worker left running. A pid is only
    signalled if it still looks like one of our steps (its working directory is the
    executor's), so a recycled pid is never hit."""
    for pid in store.running_step_pids(run_id):
        if not process_alive(pid):
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = None
        if cwd is not None and Path(cwd) != store.home / "mlflow":
            continue
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


__all__ = ["LocalSubmitter", "RunNotFound", "dispatch", "recover"]
