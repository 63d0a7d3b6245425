"""LocalSubmitter: queued runs in detached workers, idempotent submit, limits,
cancel, and recovery from a worker that died."""

from __future__ import annotations

import os
import signal
import time

import pytest

from pipeline.local_submitter import INTERRUPTED, LocalSubmitter
from pipeline.request import TrainingRequest
from pipeline.settings import Settings
from pipeline.submitter import RunNotFound, SubmissionError


def _settings(home, **extra) -> Settings:
    return Settings(home=home, **extra)


def _incoming(home, prefix="drops/a/"):
    folder = home / "storage" / "incoming" / prefix
    folder.mkdir(parents=True)
    (folder / "part-0.csv").write_text("id,target\n1,0\n")
    return prefix


def _terminal(submitter, run_id, h, timeout=30.0):
    return h.wait_until(
        lambda: (r := submitter.get(run_id)).terminal and r, timeout=timeout, interval=0.05
    )


def test_submit_returns_queued_at_once_and_a_detached_worker_completes_it(home, tmp_path, h):
    path = h.write_pipeline(tmp_path / "p", {"a": {"args": "--sleep 0.5"}, "b": {"after": ["a"]}})
    submitter = LocalSubmitter(_settings(home), pipeline_path=path)
    request = TrainingRequest(data=_incoming(home))

    started = time.monotonic()
    record = submitter.submit(request, run_id="run-one", trigger="http", idempotency_key="k1")
    assert time.monotonic() - started < 5  # the worker does not run in the caller
    assert record.status in {"queued", "running"}
    assert record.idempotency_key == "k1" and record.trigger == "http"

    done = _terminal(submitter, "run-one", h)
    assert done.status == "completed", done.error
    assert [s.status for s in done.steps] == ["completed", "completed"]
    assert done.request["data"] == "drops/a/"
    inputs, job = submitter.store.job("run-one")
    assert inputs["training_data"] == str(home.resolve() / "storage" / "incoming" / "drops/a/")
    assert inputs["trigger"] == "http" and inputs["run_key"] == "k1"
    assert job["experiment"] == "aml-trigger"


def test_submitting_the_same_run_id_again_returns_the_one_existing_run(home, tmp_path, h):
    path = h.write_pipeline(tmp_path / "p", {"a": {"args": "--sleep 0.3"}})
    submitter = LocalSubmitter(_settings(home), pipeline_path=path)
    request = TrainingRequest(data=_incoming(home))
    first = submitter.submit(request, run_id="run-dup", trigger="blob")
    again = LocalSubmitter(_settings(home), pipeline_path=path).submit(
        request, run_id="run-dup", trigger="blob"
    )
    assert again.run_id == first.run_id and again.created_at == first.created_at
    _terminal(submitter, "run-dup", h)
    third = submitter.submit(request, run_id="run-dup", trigger="blob")
    assert third.status == "completed"
    assert [r.run_id for r in submitter.list_runs()] == ["run-dup"]


def test_runs_over_the_concurrency_limit_wait_and_start_when_a_slot_frees(home, tmp_path, h):
    journal = tmp_path / "journal"
    path = h.write_pipeline(tmp_path / "p", {"a": {"args": f"--journal {journal} --sleep 0.4"}})
    submitter = LocalSubmitter(_settings(home, max_concurrent_runs=1), pipeline_path=path)
    request = TrainingRequest(data=_incoming(home))
    submitter.submit(request, run_id="run-first", trigger="timer")
    second = submitter.submit(request, run_id="run-second", trigger="timer")
    assert second.status == "queued"

    assert _terminal(submitter, "run-second", h).status == "completed"
    lines = journal.read_text().split()
    # The second run's step started only after the first run's step had ended.
    events = [w for w in lines if w in {"start", "end"}]
    assert events == ["start", "end", "start", "end"]
    assert [r.run_id for r in submitter.list_runs()] == ["run-second", "run-first"]


def test_cancel_a_queued_run_and_a_running_run(home, tmp_path, h, reaper):
    journal = tmp_path / "journal"
    path = h.write_pipeline(
        tmp_path / "p",
        {"slow": {"args": f"--journal {journal} --sleep 60"}, "b": {"after": ["slow"]}},
    )
    submitter = LocalSubmitter(_settings(home, max_concurrent_runs=1), pipeline_path=path)
    request = TrainingRequest(data=_incoming(home))
    submitter.submit(request, run_id="run-running", trigger="http")
    queued = submitter.submit(request, run_id="run-queued", trigger="http")
    assert queued.status == "queued"

    canceled = submitter.cancel("run-queued")
    assert canceled.status == "canceled"
    assert [s.status for s in canceled.steps] == ["canceled", "canceled"]

    pid = h.wait_until(lambda: h.journal_pids(journal).get("slow"))
    reaper.append(pid)
    record = submitter.cancel("run-running", wait_s=15)
    assert record.status == "canceled"
    assert record.steps[0].status == "canceled" and record.steps[1].status == "canceled"
    h.wait_until(lambda: not h.pid_alive(pid), timeout=10)
    with pytest.raises(RunNotFound):
        submitter.cancel("run-nope")


def test_a_killed_worker_leaves_a_failed_run_not_a_running_one(home, tmp_path, h, reaper):
    journal = tmp_path / "journal"
    path = h.write_pipeline(tmp_path / "p", {"slow": {"args": f"--journal {journal} --sleep 60"}})
    submitter = LocalSubmitter(_settings(home), pipeline_path=path)
    request = TrainingRequest(data=_incoming(home))
    submitter.submit(request, run_id="run-crash", trigger="http")
    submitter.submit(request, run_id="run-next", trigger="http")  # queued behind it
    step_pid = h.wait_until(lambda: h.journal_pids(journal).get("slow"))
    reaper.append(step_pid)
    worker_pid = submitter.store.liveness("run-crash").pid
    reaper.append(worker_pid)

    os.kill(worker_pid, signal.SIGKILL)
    h.wait_until(lambda: not h.pid_alive(worker_pid), timeout=10)

    fresh = LocalSubmitter(_settings(home), pipeline_path=path)  # e.g. the host restarting
    record = fresh.store.get("run-crash")
    assert record.status == "failed"
    assert record.error == INTERRUPTED
    assert record.steps[0].status == "failed"
    h.wait_until(lambda: not h.pid_alive(step_pid), timeout=10)  # no orphan step left
    # The queued run was not lost: it is dispatched in the freed slot.
    nxt = fresh.store.get("run-next")
    assert nxt.status in {"running", "completed", "failed"}
    fresh.cancel("run-next", wait_s=15)
    assert fresh.get("run-next").terminal


def test_bad_data_location_fails_the_run_with_a_precise_message(home, tmp_path, h):
    path = h.write_pipeline(tmp_path / "p", {"a": {}})
    submitter = LocalSubmitter(_settings(home), pipeline_path=path)
    submitter.submit(TrainingRequest(data="nowhere/"), run_id="run-nodata", trigger="http")
    record = _terminal(submitter, "run-nodata", h)
    assert record.status == "failed"
    assert "does not exist" in record.error and "'nowhere/'" in record.error
    assert "'incoming'" in record.error


def test_describe_lists_the_resolved_commands_without_recording_a_run(home):
    submitter = LocalSubmitter(_settings(home))
    request = TrainingRequest(data="drops/x/", deploy_target="none")
    plan = submitter.describe(request, run_id="run-plan", trigger="http")
    assert [s["name"] for s in plan["steps"]][:3] == ["prep", "check_drift", "train"]
    prep = plan["steps"][0]["command"]
    assert prep[1:3] == ["-m", "steps.prep"]
    assert prep[prep.index("--data") + 1].endswith("storage/incoming/drops/x")
    deploy = next(s for s in plan["steps"] if s["name"] == "deploy")["command"]
    assert deploy[deploy.index("--target") + 1] == "none"
    assert submitter.list_runs() == []
    with pytest.raises(RunNotFound):
        submitter.get("run-plan")


def test_invalid_run_ids_are_refused(home):
    submitter = LocalSubmitter(_settings(home))
    with pytest.raises(SubmissionError, match="run id"):
        submitter.submit(TrainingRequest(), run_id="../../etc", trigger="http")


def test_a_foreground_run_is_recorded_and_can_be_canceled_from_elsewhere(
    home, tmp_path, h, data_dir
):
    import threading

    journal = tmp_path / "journal"
    path = h.write_pipeline(
        tmp_path / "p",
        {"slow": {"args": f"--journal {journal} --sleep 60"}, "b": {"after": ["slow"]}},
    )
    submitter = LocalSubmitter(_settings(home), pipeline_path=path)
    events, result = [], {}

    def foreground():
        result["record"] = submitter.run_foreground(
            TrainingRequest(), run_id="run-fg", data_dir=data_dir, progress=events.append
        )

    thread = threading.Thread(target=foreground)
    thread.start()
    pid = h.wait_until(lambda: h.journal_pids(journal).get("slow"))
    running = submitter.get("run-fg")
    assert running.status == "running" and running.trigger == "cli"
    assert submitter.store.job("run-fg")[0]["training_data"] == str(data_dir.resolve())

    submitter.cancel("run-fg", wait_s=15)
    thread.join(timeout=15)
    assert result["record"].status == "canceled"
    assert not h.pid_alive(pid)
    assert ("slow", "canceled") in [(e.node, e.status) for e in events]


@pytest.mark.azurite
def test_with_blob_storage_the_worker_downloads_the_prefix_first(home, tmp_path, h, azurite):
    from pipeline.blob_storage import BlobStorage

    blobs = BlobStorage.from_connection_string(azurite)
    blobs.put_blob("incoming", "drops/b1/part-0.csv", b"id,target\n1,0\n")
    blobs.put_blob("incoming", "drops/b1/sub/part-1.csv", b"id,target\n2,1\n")
    blobs.put_blob("incoming", "drops/other/part-9.csv", b"id,target\n3,1\n")
    path = h.write_pipeline(tmp_path / "p", {"a": {}})
    settings = Settings(home=home, storage_connection=azurite)
    submitter = LocalSubmitter(settings, pipeline_path=path)
    submitter.submit(TrainingRequest(data="drops/b1/"), run_id="run-blob", trigger="blob")
    record = _terminal(submitter, "run-blob", h)
    assert record.status == "completed", record.error
    assert record.extra["summaries"]["a"]["data_files"] == ["part-0.csv", "sub/part-1.csv"]
    inputs, _ = submitter.store.job("run-blob")
    assert inputs["data_location"] == "incoming/drops/b1/"
    assert inputs["training_data"].startswith(str(submitter.store.run_dir("run-blob")))

    submitter.submit(TrainingRequest(data="drops/empty/"), run_id="run-blob-empty", trigger="blob")
    empty = _terminal(submitter, "run-blob-empty", h)
    assert empty.status == "failed" and "no blobs under" in empty.error


def test_two_slots_run_two_runs_at_once(home, tmp_path, h):
    # Each run's step waits for the other run's marker: only two concurrent workers pass.
    one, two = tmp_path / "one.marker", tmp_path / "two.marker"
    path_one = h.write_pipeline(tmp_path / "p1", {"a": {"args": f"--touch {one} --wait-for {two}"}})
    path_two = h.write_pipeline(tmp_path / "p2", {"a": {"args": f"--touch {two} --wait-for {one}"}})
    settings = _settings(home, max_concurrent_runs=2)
    request = TrainingRequest(data=_incoming(home))
    first = LocalSubmitter(settings, pipeline_path=path_one)
    first.submit(request, run_id="run-slot-1", trigger="http")
    LocalSubmitter(settings, pipeline_path=path_two).submit(
        request, run_id="run-slot-2", trigger="http"
    )
    assert _terminal(first, "run-slot-1", h).status == "completed"
    assert _terminal(first, "run-slot-2", h).status == "completed"
