"""When is a `running` run's process considered gone?"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from pipeline.run_store import WorkerState
from pipeline.worker import STALE_AFTER_S, process_identity, worker_alive

NOW = time.time()
ME = os.getpid()


def _state(pid, identity, age_s):
    return WorkerState(pid=pid, identity=identity, heartbeat=NOW - age_s, cancel_requested=False)


def test_a_worker_still_starting_lives_on_its_heartbeat_alone():
    assert worker_alive(_state(None, None, 1.0), now=NOW)
    assert not worker_alive(_state(None, None, STALE_AFTER_S + 1), now=NOW)


def test_an_identified_live_process_survives_a_stale_heartbeat_like_a_laptop_waking_up():
    assert worker_alive(_state(ME, process_identity(ME), 3600.0), now=NOW)


def test_a_recycled_pid_is_not_taken_for_the_worker():
    assert not worker_alive(_state(ME, "1", 1.0), now=NOW)


def test_an_exited_process_is_gone_even_with_a_fresh_heartbeat():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = process_identity(proc.pid)
    proc.wait()
    assert not worker_alive(_state(proc.pid, identity, 0.0), now=NOW)
