"""The `local` deploy target: a blue/green endpoint of scoring servers on 127.0.0.1.

Each deployment is the Azure ML inference server (`azmlinfsrv`) running
steps/score.py with AZUREML_MODEL_DIR pointing at a copy of the registered model,
laid out as Azure ML lays it out (`azureml-models/<name>/<version>`). It runs
detached (its own session) so it outlives the deploy step, with its log and
`deployment.json` in `$AML_TRIGGER_HOME/endpoints/<endpoint>/<blue|green>/`.
The endpoint's `state.json` names the live deployment; it is switched (atomic
write) only after the new deployment answered the smoke test and, when deploy
passes `read_champion`, only if its version is still the champion at that moment
(steps/champion.py); only then is the old one stopped. A failed smoke test, or a
version superseded meanwhile, stops the new one; the old one serves on.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from steps._cli import StepError, read_json, write_json
from steps.champion import Superseded, check_still_champion
from steps.smoke_test import smoke_test

ENTRY_SCRIPT = Path(__file__).resolve().parent / "score.py"
REPO_ROOT = Path(__file__).resolve().parent.parent
SERVER_MODULE = "steps.inference_server"
COLORS = ("blue", "green")


def endpoint_dir(home: Path, endpoint_name: str) -> Path:
    return home / "endpoints" / endpoint_name


def current(home: Path, endpoint_name: str) -> dict[str, Any] | None:
    """The live deployment of an endpoint (with `alive`), or None if it has none."""
    state_file = endpoint_dir(home, endpoint_name) / "state.json"
    if not state_file.is_file():
        return None
    live = read_json(state_file, what=f"endpoint {endpoint_name}").get("live")
    if not live:
        return None
    return {**live, "alive": _is_ours(live.get("pid"))}


def deploy_local(
    *,
    home: Path,
    endpoint_name: str,
    model_name: str,
    model_version: str,
    model_source: Path,
    sample_rows: list[dict[str, Any]],
    entry_script: Path = ENTRY_SCRIPT,
    ready_timeout: float = 120.0,
    read_champion: Callable[[], str | None] | None = None,
) -> dict[str, Any]:
    """Start, smoke test, check the version is still the champion (`read_champion`),
    switch, stop the old one; returns the new live deployment. Raises Superseded
    (the new deployment stopped, the old one serving) when the champion moved."""
    folder = endpoint_dir(home, endpoint_name)
    folder.mkdir(parents=True, exist_ok=True)
    with _endpoint_lock(folder):
        state_file = folder / "state.json"
        state = read_json(state_file, what="endpoint state") if state_file.is_file() else {}
        old = state.get("live")
        if old and not _is_ours(old.get("pid")):
            print(
                f"deploy: the recorded live deployment {old.get('deployment')} is not running",
                file=sys.stderr,
            )
        color = COLORS[1] if old and old.get("deployment") == COLORS[0] else COLORS[0]
        deployment_dir = folder / color
        _clear(deployment_dir)
        model_dir = deployment_dir / "azureml-models" / model_name / str(model_version)
        shutil.copytree(model_source, model_dir)
        old_label = (
            f"the old deployment {old['deployment']} (model v{old.get('model_version')}) keeps "
            f"serving at {old.get('scoring_uri')}"
            if old
            else "no deployment was serving before, and none is now"
        )
        process = None
        try:
            process, info = _start_listening(
                deployment_dir, model_dir, color, model_name, model_version, entry_script,
                ready_timeout,
            )  # fmt: skip
            smoke = smoke_test(info["scoring_uri"], sample_rows)
            if read_champion is not None:
                # The last moment before the switch: a rival promotion may have
                # outranked this version since register reported it promoted.
                check_still_champion(model_version, read_champion)
        except StepError as exc:
            if process is not None:
                _stop_child(process)
            raise StepError(
                f"new deployment {color} (model v{model_version}) failed: {exc}; {old_label}"
            ) from None
        except Superseded as exc:
            _stop_child(process)
            exc.cleanup = f"new deployment {color} (model v{model_version}) stopped; {old_label}"
            raise
        except BaseException:
            # The champion could not be read (or the step was interrupted): the new
            # deployment must not outlive the step with no state naming it.
            if process is not None:
                _stop_child(process)
            raise
        info["smoke_test"] = smoke
        write_json(deployment_dir / "deployment.json", info)
        write_json(
            state_file,
            {
                "endpoint_name": endpoint_name,
                "live": info,
                "previous": old,
                "updated_at": _now(),
            },
        )
        if old and old.get("deployment") != color:
            stop_deployment(old)
        return info


def stop_deployment(info: dict[str, Any], *, timeout: float = 15.0) -> bool:
    """Stop one deployment's server (its whole process group); False if it was not running."""
    pid = info.get("pid")
    if not _is_ours(pid):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _is_ours(pid):
        time.sleep(0.1)
    if _is_ours(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return True


def stop_all(home: Path) -> list[str]:
    """Stop every local scoring server under home; returns what was stopped."""
    stopped = []
    root = home / "endpoints"
    if not root.is_dir():
        return stopped
    for deployment_file in sorted(root.glob("*/*/deployment.json")):
        try:
            info = read_json(deployment_file, what="deployment")
        except StepError:
            continue
        if stop_deployment(info):
            stopped.append(f"{deployment_file.parent.parent.name}/{deployment_file.parent.name}")
    return stopped


def _start_listening(
    deployment_dir: Path,
    model_dir: Path,
    color: str,
    model_name: str,
    model_version: str,
    entry_script: Path,
    ready_timeout: float,
    attempts: int = 3,
) -> tuple[subprocess.Popen, dict[str, Any]]:
    """Start the server and wait until it answers. The free port is picked before the
    server binds it, so another process can take it meanwhile: then try another port."""
    for attempt in range(1, attempts + 1):
        process, info = _start(
            deployment_dir, model_dir, color, model_name, model_version, entry_script
        )
        try:
            _wait_ready(process, info, deployment_dir, ready_timeout)
            return process, info
        except StepError:
            if attempt == attempts or not _lost_port_race(deployment_dir / "server.log"):
                _stop_child(process)
                raise
            _stop_child(process)
    raise AssertionError("unreachable")


def _lost_port_race(log: Path) -> bool:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "Address already in use" in text or "Connection in use" in text


def _start(
    deployment_dir: Path,
    model_dir: Path,
    color: str,
    model_name: str,
    model_version: str,
    entry_script: Path,
) -> tuple[subprocess.Popen, dict[str, Any]]:
    port = _free_port()
    env = {
        **os.environ,
        "AZUREML_MODEL_DIR": str(model_dir),
        "AML_APP_ROOT": str(REPO_ROOT),
        "AML_TRIGGER_MODEL_VERSION": str(model_version),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
        "WORKER_COUNT": "1",
    }
    if _gunicorn_has_control_socket():
        # gunicorn >= 26 opens one control socket per user (~/.gunicorn/gunicorn.ctl);
        # blue and green running side by side would fight over it.
        env["GUNICORN_CMD_ARGS"] = "--no-control-socket"
    command = [sys.executable, "-m", SERVER_MODULE, "--entry_script", str(entry_script),
               "--port", str(port)]  # fmt: skip
    with (deployment_dir / "server.log").open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=deployment_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the deploy step; stopped as a group
        )
    info = {
        "deployment": color,
        "pid": process.pid,
        "port": port,
        "scoring_uri": f"http://127.0.0.1:{port}/score",
        "model_name": model_name,
        "model_version": str(model_version),
        "model_dir": str(model_dir),
        "log": str(deployment_dir / "server.log"),
        "started_at": _now(),
    }
    write_json(deployment_dir / "deployment.json", info)
    return process, info


def _gunicorn_has_control_socket() -> bool:
    try:
        from gunicorn.config import ControlSocketDisable  # noqa: F401
    except ImportError:
        return False
    return True


def _wait_ready(process: subprocess.Popen, info: dict, folder: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    health = f"http://127.0.0.1:{info['port']}/"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StepError(
                f"the scoring server exited with code {process.returncode} while starting "
                f"(init() failed?); last log lines: {_log_tail(folder / 'server.log')}"
            )
        try:
            with urllib.request.urlopen(health, timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise StepError(f"the scoring server did not answer {health} within {timeout:.0f} s")


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    interesting = [line for line in text if line.strip()][-lines:]
    return " | ".join(line.strip()[:200] for line in interesting)


def _stop_child(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def _clear(deployment_dir: Path) -> None:
    """Remove a leftover (never the live) deployment folder, stopping its server first."""
    info_file = deployment_dir / "deployment.json"
    if info_file.is_file():
        try:
            stop_deployment(read_json(info_file, what="deployment"))
        except StepError:
            pass
    if deployment_dir.exists():
        shutil.rmtree(deployment_dir)
    deployment_dir.mkdir(parents=True)


def _is_ours(pid: Any) -> bool:
    """Is pid a running scoring server we started (not a recycled pid)?"""
    if not isinstance(pid, int) or pid <= 0:
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.parent.parent.is_dir() and Path("/proc/self").exists():
        try:
            raw = cmdline.read_bytes()
            status = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        zombie = status.rsplit(")", 1)[-1].split()[0] == "Z"
        return SERVER_MODULE.encode() in raw and not zombie
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _endpoint_lock:
    """One deploy at a time per endpoint (two runs finishing together must not interleave)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".lock"

    def __enter__(self) -> None:
        self.handle = self.path.open("a")
        try:
            import fcntl

            fcntl.flock(self.handle, fcntl.LOCK_EX)
        except ImportError:
            pass

    def __exit__(self, *exc: object) -> None:
        self.handle.close()
