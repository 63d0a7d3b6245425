"""`aml-trigger wait RUN`: follow one run until it ends, for scripts and CI.

It polls the configured submitter (PIPELINE_BACKEND: the local run store, or the
Azure ML workspace) and prints one stderr line per change of state, so a CI log
shows progress; the exit code is the outcome. What counts as a change is a pure
function of two records (`changes`), kept apart from the polling loop.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

EXIT_COMPLETED = 0
EXIT_NOT_COMPLETED = 1  # failed or canceled
EXIT_USAGE = 2  # bad flags, settings, unknown run, a refusal that polling cannot fix
EXIT_TIMEOUT = 3  # still not finished when --timeout ran out


def register(sub: argparse._SubParsersAction) -> None:
    wait = sub.add_parser(
        "wait",
        help="Wait for a run to end; exit 0 only if it completed.",
        description="Poll the run through the configured backend (PIPELINE_BACKEND) until it "
        "is completed, failed or canceled, printing each change of state. Exit codes: 0 "
        "completed, 1 failed or canceled, 2 unknown run or bad settings, 3 timed out (the "
        "run is left running; `aml-trigger cancel RUN` stops it).",
    )
    wait.add_argument("run_id", metavar="RUN", help="The run id (as `submit` prints it).")
    wait.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="Give up after this long (default: wait as long as it takes).",
    )
    wait.add_argument(
        "--interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="Time between polls (default 2 for the local backend, 15 for Azure ML).",
    )
    wait.set_defaults(func=cmd_wait)


def changes(before: Any | None, after: Any) -> list[str]:
    """What a person following the run should be told about `after`, given the
    previous poll `before` (None on the first poll): the run's state (and Azure ML's
    own state, which moves while ours says `queued`), and each step that moved."""
    lines = []
    raw_after = after.extra.get("aml_status")
    raw_before = before.extra.get("aml_status") if before is not None else None
    if before is None or before.status != after.status or raw_before != raw_after:
        detail = f" (Azure ML: {raw_after})" if raw_after else ""
        lines.append(f"run {after.run_id}: {after.status}{detail}")
    old_steps = {s.name: s.status for s in before.steps} if before is not None else {}
    for step in after.steps:
        if step.status == "pending" or old_steps.get(step.name) == step.status:
            continue
        took = f" in {step.duration_s:.1f}s" if step.duration_s is not None else ""
        why = f": {step.error}" if step.error else ""
        lines.append(f"  {step.name}: {step.status}{took}{why}")
    return lines


def wait_for_run(
    submitter: Any,
    run_id: str,
    *,
    timeout_s: float | None,
    interval_s: float,
    say: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Any | None, bool]:
    """Poll until the run is terminal or `timeout_s` passes. Returns (last record,
    timed_out). Transient backend errors (throttling, 5xx, network) are reported and
    polled through; RunNotFound and other refusals propagate."""
    from pipeline.submitter import SubmissionError

    started = clock()
    record = None
    while True:
        try:
            current = submitter.get(run_id)
        except SubmissionError as exc:
            if not exc.retryable:
                raise
            say(f"[{clock() - started:7.1f}s] backend busy ({exc.message}); polling again")
            current = None
        if current is not None:
            for line in changes(record, current):
                say(f"[{clock() - started:7.1f}s] {line}")
            record = current
            if record.terminal:
                return record, False
        pause = interval_s
        if timeout_s is not None:
            remaining = timeout_s - (clock() - started)
            if remaining <= 0:
                return record, True
            pause = min(pause, remaining)  # one last poll right at the deadline
        sleep(pause)


def cmd_wait(args: argparse.Namespace) -> int:
    from cli.pipeline_commands import _settings, format_run
    from pipeline.backends import make_submitter
    from pipeline.settings import SettingsError
    from pipeline.submitter import RunNotFound, SubmissionError

    if args.timeout is not None and args.timeout <= 0:
        return _usage(f"--timeout {args.timeout:g}: must be more than 0 seconds")
    if args.interval is not None and args.interval <= 0:
        return _usage(f"--interval {args.interval:g}: must be more than 0 seconds")
    try:
        submitter = make_submitter(_settings())
    except SettingsError as exc:
        return _usage(str(exc))
    interval = args.interval or (2.0 if submitter.backend == "local" else 15.0)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        record, timed_out = wait_for_run(
            submitter, args.run_id, timeout_s=args.timeout, interval_s=interval, say=say
        )
    except RunNotFound as exc:
        return _usage(f"{exc} (backend {submitter.backend}); `aml-trigger runs` lists runs")
    except SubmissionError as exc:
        return _usage(exc.message)
    if timed_out:
        state = record.status if record is not None else "unknown (the backend did not answer)"
        print(
            f"error: run {args.run_id} is still {state} after {args.timeout:g}s; it keeps "
            f"running (`aml-trigger cancel {args.run_id}` stops it)",
            file=sys.stderr,
        )
        return EXIT_TIMEOUT
    print(format_run(record))
    studio = record.extra.get("studio_url")
    if studio:
        print(f"studio: {studio}")
    if record.status == "completed":
        return EXIT_COMPLETED
    print(f"error: run {record.run_id} {record.status}", file=sys.stderr)
    return EXIT_NOT_COMPLETED


def _usage(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE
