"""`aml-trigger demo`, the README's first command, run as a user runs it: a fresh
home, the console script in a subprocess, everything through the real host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

CLI = [sys.executable, "-m", "cli.main"]
REPO = Path(__file__).resolve().parent.parent


def _cli(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_demo_turns_one_data_drop_into_a_deployed_champion_then_keeps_it_serving(home):
    env = {**os.environ, "AML_TRIGGER_HOME": str(home)}
    env.pop("AML_TRIGGER_FUNCTION_KEY", None)
    try:
        first = _cli(["demo", "--rows", "20000", "--seed", "3", "--port", str(free_port())], env)
        assert first.returncode == 0, first.stderr[-2000:]
        assert "_SUCCESS: the drop is complete" in first.stderr
        assert "run-" in first.stdout and ": completed" in first.stdout
        assert "gate: promote" in first.stdout
        assert "model: porto-seguro-lgbm version 1 (champion)" in first.stdout
        assert "smoke test: passed" in first.stdout
        assert '"probabilities": [' in first.stdout  # three rows scored on the endpoint
        for node in ("prep", "train", "evaluate", "register", "deploy", "smoke_test"):
            assert f"{node:<15} completed" in first.stderr  # live progress per step

        runs = json.loads(_cli(["runs", "--json"], env).stdout)
        assert [(r["trigger"], r["status"]) for r in runs] == [("blob", "completed")]
        status = _cli(["endpoints", "status"], env).stdout
        assert "serving" in status and "v1" in status

        # A second drop trained on less data is rejected; the champion serves on.
        second = _cli(["demo", "--rows", "5000", "--seed", "4", "--port", str(free_port())], env)
        assert "gate: reject" in second.stdout, second.stdout + second.stderr[-2000:]
        assert "champion v1 keeps serving at" in second.stdout
        assert '"model_version": "1"' in second.stdout
    finally:
        stopped = _cli(["endpoints", "stop"], env).stdout
    assert "stopped: porto-seguro/" in stopped
    assert "stopped blue" in _cli(["endpoints", "status"], env).stdout


def test_demo_refuses_the_azure_backend_with_a_pointer(home):
    env = {**os.environ, "AML_TRIGGER_HOME": str(home), "PIPELINE_BACKEND": "aml"}
    result = _cli(["demo"], env, timeout=60)
    assert result.returncode == 2
    assert "PIPELINE_BACKEND=aml: the demo runs the embedded default" in result.stderr
    assert "Traceback" not in result.stderr


def test_endpoints_status_and_stop_with_nothing_deployed(home):
    env = {**os.environ, "AML_TRIGGER_HOME": str(home)}
    assert "no local endpoints" in _cli(["endpoints", "status"], env, timeout=60).stdout
    assert "nothing was serving" in _cli(["endpoints", "stop"], env, timeout=60).stdout
