"""MAX_CONCURRENT_RUNS across processes: TriggerServices in separate processes on one
shared state store (SQLite, or blobs on Azurite), as the HTTP, blob and timer
functions of one app run on Flex Consumption."""

from __future__ import annotations

import multiprocessing
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # spawned processes import the helpers

from shared_backend import SharedBackend, client_process  # noqa: E402

PROCESSES = 4
REQUESTS = 40
LIMIT = 2


def run_processes(config: dict) -> dict[str, str]:
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters, like separate instances
    start, submitted = ctx.Barrier(PROCESSES), ctx.Barrier(PROCESSES)
    accepted, results = ctx.Value("i", 0), ctx.Queue()
    procs = [
        ctx.Process(
            target=client_process,
            args=(config, list(range(p, REQUESTS, PROCESSES)), start, submitted, accepted, results),
        )  # fmt: skip
        for p in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    outcomes: dict[str, str] = {}
    for _ in procs:
        outcomes.update(results.get(timeout=300))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return outcomes


def check(outcomes: dict[str, str], backend: SharedBackend, policy: str) -> None:
    runs = backend.runs()
    print(f"max active runs observed by the backend: {backend.max_active()} (limit {LIMIT})")
    assert backend.max_active() == LIMIT  # reached, never passed
    assert set(outcomes.values()) <= {"accepted", "skipped"}, outcomes
    assert len(outcomes) == REQUESTS  # every request answered: none lost
    accepted = {k for k, v in outcomes.items() if v == "accepted"}
    assert set(runs) == accepted  # exactly the accepted ones ran ...
    assert all(status == "completed" for status, _, _ in runs.values())
    assert all(n == 1 for _, _, n in runs.values())  # ... each submitted once
    if policy == "queue":
        assert len(accepted) == REQUESTS
    else:
        assert LIMIT <= len(accepted) < REQUESTS


@pytest.mark.parametrize("policy", ["queue", "skip"])
def test_forty_requests_from_four_processes_on_sqlite_never_exceed_the_limit(tmp_path, policy):
    config = {"home": str(tmp_path), "backend": str(tmp_path / "backend.db"),
              "limit": LIMIT, "policy": policy}  # fmt: skip
    backend = SharedBackend(tmp_path / "backend.db")
    check(run_processes(config), backend, policy)


@pytest.mark.azurite
@pytest.mark.parametrize("policy", ["queue", "skip"])
def test_forty_requests_from_four_processes_on_azurite_never_exceed_the_limit(
    tmp_path, azurite, policy
):
    config = {"home": str(tmp_path), "backend": str(tmp_path / "backend.db"), "limit": LIMIT,
              "policy": policy, "azurite": azurite,
              "container": f"state-{uuid.uuid4().hex[:12]}"}  # fmt: skip
    backend = SharedBackend(tmp_path / "backend.db")
    check(run_processes(config), backend, policy)
