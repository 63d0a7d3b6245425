"""Fixtures for the CI/CD checks: a two-step pipeline of quick_step.py that the real
local backend runs (worker process, run store), and the local Functions host
serving function_app over a real socket on that backend.

Seeds steer the quick step: 13 fails the first step, 7 makes it take 30 s, any
other seed completes in well under a second.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from pipeline.definition import PIPELINE_YAML

QUICK_STEP = Path(__file__).resolve().parent / "quick_step.py"
FUNCTION_KEY = "ops-test-function-key"
FAIL_SEED, SLOW_SEED = 13, 7


def write_quick_pipeline(folder: Path) -> Path:
    """The real pipeline's inputs (so any TrainingRequest binds) over two quick steps."""
    folder.mkdir(parents=True, exist_ok=True)
    real = yaml.safe_load(PIPELINE_YAML.read_text())
    pipeline = {"type": "pipeline", "name": "ops_quick", "inputs": real["inputs"], "jobs": {}}
    previous = None
    for node in ("prep", "train"):
        inputs = {"seed": {"type": "integer", "default": 1}}
        after = ""
        if previous:
            inputs["upstream"] = {"type": "uri_folder"}
            after = " --upstream ${{inputs.upstream}}"
        component = {
            "type": "command",
            "name": f"ops_{node}",
            "inputs": inputs,
            "outputs": {"out": {"type": "uri_folder"}},
            "command": f"python {QUICK_STEP} --name {node} --seed ${{{{inputs.seed}}}} "
            f"--out ${{{{outputs.out}}}}{after}",
        }
        (folder / f"{node}.yaml").write_text(yaml.safe_dump(component, sort_keys=False))
        bindings = {"seed": "${{parent.inputs.seed}}"}
        if previous:
            bindings["upstream"] = f"${{{{parent.jobs.{previous}.outputs.out}}}}"
        pipeline["jobs"][node] = {"type": "command", "component": f"./{node}.yaml",
                                  "inputs": bindings}  # fmt: skip
        previous = node
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))
    return path


@pytest.fixture
def quick_submitter(home, tmp_path):
    """A LocalSubmitter (the embedded default backend) running the quick pipeline."""
    from pipeline.local_submitter import LocalSubmitter
    from pipeline.settings import Settings

    path = write_quick_pipeline(tmp_path / "quick-pipeline")
    (home / "storage" / "incoming" / "drops").mkdir(parents=True)
    (home / "storage" / "incoming" / "drops" / "part-0.csv").write_text("id,target\n1,0\n")
    submitter = LocalSubmitter(Settings.from_env(), pipeline_path=path)
    yield submitter
    for record in submitter.list_runs(50):  # leave no worker behind
        if not record.terminal:
            submitter.cancel(record.run_id, wait_s=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(quick_submitter):
    """The local host serving function_app on a free port with FUNCTION_KEY, its
    trigger service submitting to the quick pipeline."""
    import function_app
    from pipeline.settings import Settings
    from triggers import runtime
    from triggers.host.local_host import LocalHost

    settings = Settings.from_env()
    host = LocalHost(function_app.app, settings, port=_free_port(), key=FUNCTION_KEY,
                     watch_blobs=False, run_timers=False)  # fmt: skip
    host.start(service=runtime.build_service(settings, submitter=quick_submitter))
    yield host
    host.stop()
    runtime.reset()
