"""Test pipelines: small Azure ML YAML pipelines whose nodes run fake_step.py.

They declare the real pipeline's inputs (so TrainingRequest.pipeline_inputs() fits
them) and are read by the same definition code as the real one.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from pipeline.definition import PIPELINE_YAML

FAKE_STEP = Path(__file__).resolve().parent / "fake_step.py"


def write_pipeline(folder: Path, jobs: dict[str, dict]) -> Path:
    """jobs: {node: {"after": [nodes], "args": "extra fake_step args"}} in order.
    `args` may use ${{inputs.seed}} (bound to the pipeline's seed)."""
    folder.mkdir(parents=True, exist_ok=True)
    real = yaml.safe_load(PIPELINE_YAML.read_text())
    pipeline = {"type": "pipeline", "name": "test_pipeline", "inputs": real["inputs"], "jobs": {}}
    for node, spec in jobs.items():
        after = spec.get("after", [])
        inputs = {f"after_{dep}": {"type": "uri_folder"} for dep in after}
        inputs["seed"] = {"type": "integer", "default": 1}
        inputs["data"] = {"type": "uri_folder"}
        after_args = " ".join(f"--after ${{{{inputs.after_{dep}}}}}" for dep in after)
        component = {
            "$schema": "https://azuremlschemas.azureedge.net/latest/commandComponent.schema.json",
            "type": "command",
            "name": f"test_{node}",
            "inputs": inputs,
            "outputs": {"out": {"type": "uri_folder"}},
            "command": f"python {FAKE_STEP} --name {node} --out ${{{{outputs.out}}}} "
            "--data ${{inputs.data}} "
            f"{after_args} {spec.get('args', '')}",
        }
        (folder / f"{node}.yaml").write_text(yaml.safe_dump(component, sort_keys=False))
        bindings = {f"after_{dep}": f"${{{{parent.jobs.{dep}.outputs.out}}}}" for dep in after}
        bindings["seed"] = "${{parent.inputs.seed}}"
        bindings["data"] = "${{parent.inputs.training_data}}"
        pipeline["jobs"][node] = {
            "type": "command",
            "component": f"./{node}.yaml",
            "inputs": bindings,
        }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))
    return path


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def pid_alive(pid: int) -> bool:
    from pipeline.worker import process_alive

    return process_alive(pid)


def journal_pids(journal: Path) -> dict[str, int]:
    pids = {}
    if journal.exists():
        for line in journal.read_text().splitlines():
            parts = line.split()
            if parts[0] == "start":
                pids[parts[1]] = int(parts[2])
    return pids


class Helpers:
    """Plain functions for the tests (a fixture, since --import-mode=importlib gives
    test modules no way to import a sibling module)."""

    write_pipeline = staticmethod(write_pipeline)
    wait_until = staticmethod(wait_until)
    pid_alive = staticmethod(pid_alive)
    journal_pids = staticmethod(journal_pids)


@pytest.fixture
def h() -> type[Helpers]:
    return Helpers


@pytest.fixture
def data_dir(tmp_path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    (path / "part-0.csv").write_text("id,target\n1,0\n")
    return path


@pytest.fixture
def reaper():
    """Kills, after the test, any process group a test registered (a safety net:
    tests must not leave processes behind even when they fail)."""
    groups: list[int] = []
    yield groups
    for pid in groups:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# -- MLflow as an Azure ML workspace answers it -----------------------------------------
# A workspace's MLflow endpoint is MLflow's REST API minus what its support matrix
# lacks (Microsoft Learn, "Manage models registry in Azure Machine Learning with
# MLflow": no aliases, no model rename, no whole-model delete) and minus MLflow 3's
# logged-models API (azure-sdk-for-python#44896). The stand-in is a real `mlflow
# server` behind a proxy that answers those calls as an unknown endpoint.
WORKSPACE_LACKS = re.compile(
    r"/mlflow/(logged-models\b|registered-models/(alias|rename)\b|registered-models/delete$)"
)


class WorkspaceMlflow:
    """The proxy's address (MLFLOW_TRACKING_URI) and what it refused."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.refused: list[str] = []
        self.forwarded = 0


def _proxy_handler(upstream: str, record: WorkspaceMlflow):
    class Handler(BaseHTTPRequestHandler):
        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _handle(self) -> None:
            body = self._body()
            path = self.path.split("?", 1)[0]
            if WORKSPACE_LACKS.search(path):
                record.refused.append(f"{self.command} {path}")
                payload = json.dumps(
                    {"error_code": "ENDPOINT_NOT_FOUND", "message": f"No API route for {path}"}
                ).encode()
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            record.forwarded += 1
            conn = http.client.HTTPConnection(upstream, timeout=120)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            headers["Host"] = upstream
            conn.request(self.command, self.path, body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in _HOP | {"content-length"}:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            conn.close()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, *args) -> None:
            pass

    return Handler


_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "proxy-connection"}


@pytest.fixture
def workspace_mlflow(home, tmp_path, monkeypatch):
    """A real `mlflow server` (sqlite store, served artifacts, one worker) behind the
    workspace proxy; MLFLOW_TRACKING_URI points every step at the proxy."""
    from tests.conftest import free_port

    port = free_port()
    store = tmp_path / "mlflow-server"
    store.mkdir()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
            "--artifacts-destination", str(store / "artifacts"),
        ],
        stdout=open(store / "server.log", "wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    proxy = None
    try:
        upstream = f"127.0.0.1:{port}"

        def healthy() -> bool:
            if server.poll() is not None:
                raise AssertionError((store / "server.log").read_text()[-3000:])
            try:
                conn = http.client.HTTPConnection(upstream, timeout=2)
                conn.request("GET", "/health")
                return conn.getresponse().status == 200
            except OSError:
                return False

        wait_until(healthy, timeout=90, interval=0.25)
        record = WorkspaceMlflow("")
        proxy = ThreadingHTTPServer(("127.0.0.1", 0), _proxy_handler(upstream, record))
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        record.uri = f"http://127.0.0.1:{proxy.server_address[1]}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", record.uri)
        monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        yield record
    finally:
        if proxy is not None:
            proxy.shutdown()
            proxy.server_close()
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


# -- The Azure ML step environment, built from its spec ---------------------------------
ENVIRONMENT_DIR = Path(__file__).resolve().parents[2] / "pipeline" / "environment"


def step_spec() -> tuple[list[str], list[str]]:
    """(conda dependencies, pip requirements) of pipeline/environment/conda.yaml."""
    doc = yaml.safe_load((ENVIRONMENT_DIR / "conda.yaml").read_text())
    conda = [d for d in doc["dependencies"] if isinstance(d, str)]
    pip = [r for d in doc["dependencies"] if isinstance(d, dict) for r in d.get("pip", [])]
    return conda, pip


@pytest.fixture(scope="session")
def step_python(tmp_path_factory) -> str:
    """The python of a fresh virtualenv holding exactly the step environment's pip
    packages (pip's cache makes a rebuild take about a minute)."""
    conda, pip = step_spec()
    wanted = next(d.split("=", 1)[1] for d in conda if d.startswith("python="))
    here = ".".join(map(str, sys.version_info[:3]))
    if here.rsplit(".", 1)[0] != wanted.rsplit(".", 1)[0]:
        pytest.fail(f"the step environment pins python {wanted}; this is {here}")
    venv = tmp_path_factory.mktemp("step-env") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    requirements = venv.parent / "requirements.txt"
    requirements.write_text("\n".join(pip) + "\n")
    python = str(venv / "bin" / "python")
    installed = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-r", str(requirements)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-4000:]
    return python
