"""Test pipelines: small Azure ML YAML pipelines whose nodes run fake_step.py.

They declare the real pipeline's inputs (so TrainingRequest.pipeline_inputs() fits
them) and are read by the same definition code as the real one.
"""

from __future__ import annotations

import os
import signal
import time
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
