"""`aml-trigger wait RUN` on the local backend: real runs of a quick pipeline."""

from __future__ import annotations

from cli.main import main
from cli.wait_commands import wait_for_run
from pipeline.request import TrainingRequest
from pipeline.runs import RunRecord
from pipeline.submitter import SubmissionError

FAIL_SEED, SLOW_SEED = 13, 7  # see conftest.py


def submit(submitter, run_id: str, seed: int) -> str:
    request = TrainingRequest(data="drops/", params={"seed": seed}, deploy_target="none")
    submitter.submit(request, run_id=run_id, trigger="cli")
    return run_id


def test_completed_run_exits_0_with_each_step_reported(quick_submitter, capsys):
    run_id = submit(quick_submitter, "run-wait-ok", seed=1)
    rc = main(["wait", run_id, "--interval", "0.05", "--timeout", "60"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert f"run {run_id}: completed" in out
    assert "prep: completed in" in err and "train: completed in" in err
    assert err.index("prep: completed") < err.index("train: completed")


def test_failed_run_exits_1_naming_the_step_and_its_error(quick_submitter, capsys):
    run_id = submit(quick_submitter, "run-wait-fail", seed=FAIL_SEED)
    rc = main(["wait", run_id, "--interval", "0.05", "--timeout", "60"])
    out, err = capsys.readouterr()
    assert rc == 1
    assert f"run {run_id}: failed" in out
    assert "prep: failed" in err and f"prep refused seed {FAIL_SEED}" in err
    assert f"error: run {run_id} failed" in err


def test_timeout_exits_3_and_leaves_the_run_running(quick_submitter, capsys):
    run_id = submit(quick_submitter, "run-wait-slow", seed=SLOW_SEED)
    rc = main(["wait", run_id, "--interval", "0.05", "--timeout", "1"])
    _, err = capsys.readouterr()
    assert rc == 3
    assert f"run {run_id} is still running after 1s" in err
    assert f"aml-trigger cancel {run_id}" in err
    assert quick_submitter.get(run_id).status == "running"


def test_unknown_run_and_bad_flags_exit_2(home, capsys):
    assert main(["wait", "run-nobody"]) == 2
    assert "no run named 'run-nobody'" in capsys.readouterr().err
    assert main(["wait", "run-x", "--timeout", "0"]) == 2
    assert "--timeout 0: must be more than 0 seconds" in capsys.readouterr().err


def test_unknown_backend_setting_exits_2_naming_it(home, monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_BACKEND", "spark")
    assert main(["wait", "run-x"]) == 2
    assert "PIPELINE_BACKEND" in capsys.readouterr().err


class FlakyBackend:
    """The Azure ML submitter's observable behaviour at the seam: throttled once,
    then the job moves through Azure ML states to Completed."""

    backend = "aml"

    def __init__(self) -> None:
        self.answers = [
            SubmissionError("throttled", "429 too many requests", retryable=True),
            self.record("queued", "Preparing"),
            self.record("queued", "Preparing"),
            self.record("running", "Running"),
            self.record("completed", "Completed"),
        ]

    @staticmethod
    def record(status: str, aml_status: str) -> RunRecord:
        return RunRecord(
            run_id="run-aml",
            status=status,
            backend="aml",
            created_at="2026-01-01T00:00:00Z",
            extra={"aml_status": aml_status},
        )

    def get(self, run_id: str) -> RunRecord:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_transient_errors_are_polled_through_and_each_change_said_once():
    said: list[str] = []
    record, timed_out = wait_for_run(FlakyBackend(), "run-aml", timeout_s=None, interval_s=0,
                                     say=said.append, sleep=lambda s: None)  # fmt: skip
    assert (record.status, timed_out) == ("completed", False)
    lines = [line.split("] ", 1)[1] for line in said]
    assert lines == [
        "backend busy (429 too many requests); polling again",
        "run run-aml: queued (Azure ML: Preparing)",
        "run run-aml: running (Azure ML: Running)",
        "run run-aml: completed (Azure ML: Completed)",
    ]


def test_a_refusal_that_polling_cannot_fix_is_raised():
    backend = FlakyBackend()
    backend.answers = [SubmissionError("unauthorized", "token refused")]
    try:
        wait_for_run(backend, "run-aml", timeout_s=5, interval_s=0, say=print, sleep=lambda s: 0)
    except SubmissionError as exc:
        assert exc.code == "unauthorized"
    else:
        raise AssertionError("an unauthorized answer must stop the wait")
