"""Fixtures shared by every test folder: an isolated AML_TRIGGER_HOME and Azurite.

Azurite is the real storage emulator from npm (installed by `make test`); it is
started once per session on free loopback ports, with its data in a temporary
folder (Azurite 3.35 refuses --inMemoryPersistence together with --location), and
stopped after.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
AZURITE_ACCOUNT = "devstoreaccount1"
# The emulator's published well-known development key (not a secret).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh AML_TRIGGER_HOME with the embedded defaults (no Azure settings)."""
    path = tmp_path / "home"
    path.mkdir()
    for name in list(os.environ):
        if name.startswith(
            ("AML_", "AzureWebJobs", "PIPELINE_BACKEND", "INCOMING_CONTAINER", "MLFLOW_")
        ):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AML_TRIGGER_HOME", str(path))
    return path


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """A running Azurite blob+queue+table service; yields its connection string."""
    exe = REPO / "node_modules" / ".bin" / "azurite"
    if not exe.exists():
        found = shutil.which("azurite")
        if not found:
            pytest.fail("Azurite is not installed: run `npm install` (make test does it)")
        exe = Path(found)
    blob, queue, table = free_port(), free_port(), free_port()
    workdir = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen(
        [
            str(exe), "--silent", "--skipApiVersionCheck", "--loose",
            "--disableTelemetry", "--location", str(workdir),
            "--blobHost", "127.0.0.1", "--blobPort", str(blob),
            "--queueHost", "127.0.0.1", "--queuePort", str(queue),
            "--tableHost", "127.0.0.1", "--tablePort", str(table),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", blob), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"Azurite exited: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("Azurite did not open its blob port within 30 s")
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{blob}/{AZURITE_ACCOUNT};"
        f"QueueEndpoint=http://127.0.0.1:{queue}/{AZURITE_ACCOUNT};"
        f"TableEndpoint=http://127.0.0.1:{table}/{AZURITE_ACCOUNT};"
    )
    yield conn
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
