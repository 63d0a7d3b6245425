"""The local executor on small test pipelines: order, concurrency, failure, cancel."""

from __future__ import annotations

import threading

from pipeline.definition import load_pipeline
from pipeline.local_executor import LocalExecutor, step_error, summarize
from pipeline.run_store import RunStore


def _execute(home, pipeline_path, data_dir, *, run_id="run-test", progress=None, executor=None):
    store = RunStore(home)
    definition = load_pipeline(pipeline_path)
    store.create_run(
        run_id,
        trigger="test",
        idempotency_key=None,
        request=None,
        inputs={},
        job={},
        steps=definition.order(),
        status="running",
    )
    executor = executor or LocalExecutor(definition, store)
    record = executor.execute(run_id, {"training_data": str(data_dir)}, progress=progress)
    return store, record


def test_nodes_run_in_dependency_order_with_their_own_folders_and_logs(home, tmp_path, data_dir, h):
    journal = tmp_path / "journal"
    path = h.write_pipeline(
        tmp_path / "p",
        {
            "first": {"args": f"--journal {journal}"},
            "second": {
                "after": ["first"],
                "args": f"--journal {journal} --echo ${{{{inputs.seed}}}}",
            },
            "third": {"after": ["first", "second"], "args": f"--journal {journal}"},
        },
    )
    events = []
    store, record = _execute(home, path, data_dir, progress=events.append)

    assert record.status == "completed", record
    starts_and_ends = [" ".join(line.split()[:2]) for line in journal.read_text().splitlines()]
    assert starts_and_ends == [
        "start first", "end first", "start second", "end second", "start third", "end third",
    ]  # fmt: skip
    assert [s.status for s in record.steps] == ["completed"] * 3
    assert all(s.duration_s is not None and s.duration_s >= 0 for s in record.steps)
    assert all(s.peak_rss_mb and s.peak_rss_mb > 1 for s in record.steps)
    second = store.output_dir("run-test", "second", "out") / "summary.json"
    assert '"echo": ["42"]' in second.read_text()  # the pipeline default seed reached argv
    log = store.log_path("run-test", "second").read_text()
    assert "second: working" in log and "--name second" in log
    assert [(e.node, e.status) for e in events][:2] == [
        ("first", "running"),
        ("first", "completed"),
    ]


def test_independent_nodes_run_at_the_same_time(home, tmp_path, data_dir, h):
    # Each of the two waits (up to 10 s) for the other's marker: only concurrency passes.
    left, right = tmp_path / "left.marker", tmp_path / "right.marker"
    path = h.write_pipeline(
        tmp_path / "p",
        {
            "root": {},
            "left": {"after": ["root"], "args": f"--touch {left} --wait-for {right}"},
            "right": {"after": ["root"], "args": f"--touch {right} --wait-for {left}"},
            "join": {"after": ["left", "right"]},
        },
    )
    _, record = _execute(home, path, data_dir)
    assert record.status == "completed", record.error
    assert [s.status for s in record.steps] == ["completed"] * 4


def test_a_failed_step_stops_its_dependents_and_names_its_own_error(home, tmp_path, data_dir, h):
    path = h.write_pipeline(
        tmp_path / "p",
        {
            "prep": {},
            "train": {"after": ["prep"], "args": "--fail 'column ps_car_13: not numeric'"},
            "score": {"after": ["prep"], "args": "--sleep 0.3"},
            "evaluate": {"after": ["train", "score"]},
            "deploy": {"after": ["evaluate"]},
        },
    )
    store, record = _execute(home, path, data_dir)
    status = {s.name: s for s in record.steps}
    assert record.status == "failed"
    assert record.error == "train: column ps_car_13: not numeric"
    assert status["train"].status == "failed"
    assert status["train"].error == "column ps_car_13: not numeric"
    assert status["score"].status == "completed"  # independent of train: it finishes
    assert status["evaluate"].status == "skipped" and status["deploy"].status == "skipped"
    assert not store.output_dir("run-test", "evaluate", "out").joinpath("summary.json").exists()
    assert record.extra["exit_codes"]["train"] == 2


def test_a_crashing_step_reports_the_last_line_of_its_traceback(home, tmp_path, data_dir, h):
    path = h.write_pipeline(
        tmp_path / "p", {"prep": {"args": "--crash"}, "next": {"after": ["prep"]}}
    )
    _, record = _execute(home, path, data_dir)
    assert record.status == "failed"
    assert record.error == "prep: RuntimeError: prep crashed on purpose"


def test_cancel_kills_the_running_steps_and_marks_the_run_canceled(home, tmp_path, data_dir, h):
    journal = tmp_path / "journal"
    path = h.write_pipeline(
        tmp_path / "p",
        {
            "slow": {"args": f"--journal {journal} --sleep 60"},
            "after": {"after": ["slow"]},
        },
    )
    store = RunStore(home)
    executor = LocalExecutor(load_pipeline(path), store, kill_grace_s=2.0)

    def progress(event):
        if event.node == "slow" and event.status == "running":
            threading.Timer(0.3, executor.cancel).start()

    _, record = _execute(home, path, data_dir, progress=progress, executor=executor)
    assert record.status == "canceled"
    assert [s.status for s in record.steps] == ["canceled", "canceled"]
    pid = h.journal_pids(journal)["slow"]
    assert not h.pid_alive(pid)
    assert record.steps[0].duration_s < 30


def test_step_error_prefers_the_error_line_then_the_last_line(tmp_path):
    log = tmp_path / "x.log"
    log.write_text(
        "$ python -m steps.prep\nreading\nerror: file a.csv: column target missing\nbye\n"
    )
    assert step_error(log, 2) == "file a.csv: column target missing"
    log.write_text("$ python -m steps.prep\nTraceback...\nMemoryError\n")
    assert step_error(log, 1) == "MemoryError"
    log.write_text("$ python -m steps.prep\n")
    assert step_error(log, -9) == "killed by signal SIGKILL"


def test_key_figures_come_from_the_step_summaries():
    results = summarize(
        {
            "evaluate": {
                "metrics": {"auc": 0.64, "normalized_gini": 0.28, "log_loss": 0.15, "pr_auc": 0.07},
                "champion_version": "3",
                "champion_metrics": {"auc": 0.63},
                "decision": "promote",
                "reasons": ["auc 0.6400 >= floor 0.6"],
            },
            "register": {
                "model_name": "m",
                "model_version": "4",
                "promoted": True,
            },
            "deploy": {"target": "local", "scoring_uri": "http://127.0.0.1:5001/score"},
            "smoke_test": {"passed": True, "rows": 10},
        },
        {"gate_metric": "auc"},
    )
    assert results["metrics"]["auc"] == 0.64
    assert results["gate"]["decision"] == "promote"
    assert results["gate"]["reasons"] == ["auc 0.6400 >= floor 0.6"]
    assert results["model_version"] == "4"
    assert results["endpoint"] == "http://127.0.0.1:5001/score"
    assert results["extra"]["smoke_test"]["passed"] is True
