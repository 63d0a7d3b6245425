"""Commands about pipeline runs: run, runs, show, cancel, sample-data."""

from __future__ import annotations

import argparse
import json
import sys
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_USAGE = 2
_OTHER_KEYS = ("model_name", "endpoint_name")


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser(
        "run",
        help="Run the training pipeline on this machine, in the foreground.",
        description="Run the training pipeline on a local data folder, on this machine "
        "(the local executor, whatever PIPELINE_BACKEND says), showing each step as it "
        "starts and ends. Exit 0 only if every step completed.",
    )
    run.add_argument("--data", type=Path, required=True, help="Folder with the data parts.")
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="A training, split, gate or retrain parameter, or model_name/endpoint_name "
        "(repeatable), e.g. --param num_boost_round=200.",
    )
    add_candidate_flag(run)
    run.add_argument(
        "--deploy",
        choices=["local", "none", "aci", "aks"],
        default="local",
        help="Deployment target (default: local scoring server).",
    )
    run.add_argument("--dataset-config", type=Path, help="Dataset config file (JSON/YAML).")
    run.add_argument("--experiment", default="aml-trigger", help="MLflow experiment name.")
    run.set_defaults(func=cmd_run)

    runs = sub.add_parser("runs", help="List recent runs, newest first.")
    runs.add_argument("--limit", type=int, default=20, help="How many runs (default 20).")
    runs.add_argument("--json", action="store_true", help="Print JSON records.")
    runs.set_defaults(func=cmd_runs)

    show = sub.add_parser("show", help="Show one run: steps, durations, errors, metrics.")
    show.add_argument("run_id", metavar="RUN", help="The run id.")
    show.add_argument("--json", action="store_true", help="Print the JSON record.")
    show.set_defaults(func=cmd_show)

    cancel = sub.add_parser("cancel", help="Cancel a queued or running run.")
    cancel.add_argument("run_id", metavar="RUN", help="The run id.")
    cancel.set_defaults(func=cmd_cancel)

    sample = sub.add_parser(
        "sample-data", help="Write synthetic Porto Seguro-shaped training data as CSV parts."
    )
    sample.add_argument("--rows", type=int, required=True, help="Number of rows.")
    sample.add_argument("--seed", type=int, default=42, help="Random seed (default 42).")
    sample.add_argument("--out", type=Path, required=True, help="Folder to write into.")
    sample.add_argument("--parts", type=int, default=4, help="Number of CSV files (default 4).")
    sample.add_argument(
        "--drift",
        type=float,
        default=0.0,
        help="Shift the feature distributions by this much, -5 to 5 (default 0: none); "
        "e.g. 1.0 makes a drop that check_drift sees as drifted.",
    )
    sample.set_defaults(func=cmd_sample_data)


def add_candidate_flag(parser: argparse.ArgumentParser) -> None:
    """`--candidate`, shared by `run` and `submit`."""
    parser.add_argument(
        "--candidate",
        action="append",
        default=[],
        metavar="KEY=VALUE[,KEY=VALUE...]",
        help="A training candidate (repeatable, up to 4): the training parameters it "
        "changes, e.g. --candidate num_leaves=31 --candidate num_leaves=127,learning_rate=0.1. "
        "They train side by side; the best by validation AUC goes on to the gate.",
    )


# -- parameters -----------------------------------------------------------------------


class ParamError(ValueError):
    pass


def accepted_param_keys() -> list[str]:
    from steps.params import GateKpis, RetrainPolicy, SplitParams, TrainParams

    keys = [*TrainParams.model_fields, *SplitParams.model_fields, *GateKpis.model_fields]
    keys += list(RetrainPolicy.model_fields)
    return [*keys, *_OTHER_KEYS]


def build_request(
    params: list[str], *, deploy: str | None, experiment: str, candidates: Sequence[str] = ()
) -> Any:  # -> pipeline.request.TrainingRequest
    """A TrainingRequest from `--param KEY=VALUE` and `--candidate K=V,...` strings;
    ParamError names the flag, the value and what is accepted."""
    from pydantic import ValidationError

    from pipeline.request import RetrainOverrides, TrainingRequest
    from steps.params import GateKpis, RetrainPolicy, SplitParams, TrainParams

    groups: dict[str, dict[str, Any]] = {
        "params": {}, "split": {}, "gate": {}, "retrain": {}, "top": {}
    }  # fmt: skip
    models = {"params": TrainParams, "split": SplitParams, "gate": GateKpis,
              "retrain": RetrainPolicy}  # fmt: skip
    for item in params:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ParamError(f"--param {item!r}: expected KEY=VALUE")
        group = next((g for g, m in models.items() if key in m.model_fields), None)
        if group is None and key not in _OTHER_KEYS:
            raise ParamError(
                f"--param {key}: unknown parameter; accepted: {', '.join(accepted_param_keys())}"
            )
        if group is None:
            groups["top"][key] = raw
            continue
        field = models[group].model_fields[key]
        groups[group][key] = _convert(key, raw, field.annotation)
    try:
        for group, model in models.items():
            model(**groups[group])
    except ValidationError as exc:
        raise ParamError(_describe(exc, groups)) from None
    overrides = parse_candidates(candidates)
    try:
        return TrainingRequest(
            candidates=overrides,
            params=TrainParams(**groups["params"]),
            split=SplitParams(**groups["split"]),
            gate=GateKpis(**groups["gate"]),
            retrain=RetrainOverrides(**groups["retrain"]),
            deploy_target=deploy,
            experiment=experiment,
            **groups["top"],
        )
    except ValidationError as exc:
        raise ParamError(_describe(exc, groups)) from None


def parse_candidates(texts: Sequence[str]) -> list[dict[str, Any]]:
    """`--candidate` values as TrainingRequest.candidates; ParamError names the one at fault."""
    from steps.candidates import MAX_CANDIDATES, parse_overrides

    if len(texts) > MAX_CANDIDATES:
        raise ParamError(f"--candidate given {len(texts)} times; at most {MAX_CANDIDATES}")
    parsed = []
    for number, text in enumerate(texts, start=1):
        try:
            parsed.append(parse_overrides(text))
        except ValueError as exc:
            message = str(exc).removeprefix("overrides: ")
            raise ParamError(f"--candidate #{number} {text!r}: {message}") from None
    return parsed


def _convert(key: str, raw: str, annotation: Any) -> Any:
    value = raw.strip()
    if annotation is int:
        try:
            return int(value)
        except ValueError:
            raise ParamError(f"--param {key}={raw}: expected an integer") from None
    if annotation is float:
        try:
            return float(value)
        except ValueError:
            raise ParamError(f"--param {key}={raw}: expected a number") from None
    if typing.get_origin(annotation) is typing.Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise ParamError(f"--param {key}={raw}: accepted: {', '.join(choices)}")
    return value


def _describe(exc: Any, groups: dict[str, dict[str, Any]]) -> str:
    parts = []
    for err in exc.errors():
        if err["loc"] and err["loc"][0] == "candidates":
            parts.append(f"--candidate: {err['msg'].removeprefix('Value error, ')}")
            continue
        key = str(err["loc"][-1]) if err["loc"] else "?"
        value = next((g[key] for g in groups.values() if key in g), err.get("input"))
        flag = f"--{key}" if key in {"experiment", "deploy_target"} else f"--param {key}"
        parts.append(f"{flag}={value}: {err['msg']}")
    return "; ".join(parts)


# -- commands -------------------------------------------------------------------------


def _settings():
    from pipeline.settings import Settings

    return Settings.from_env()


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.local_submitter import LocalSubmitter
    from pipeline.runs import new_run_id
    from pipeline.settings import SettingsError
    from pipeline.submitter import SubmissionError

    try:
        request = build_request(
            args.param, deploy=args.deploy, experiment=args.experiment, candidates=args.candidate
        )
    except ParamError as exc:
        return _fail(str(exc))
    if not args.data.is_dir():
        return _fail(f"--data {args.data}: no such folder")
    if args.dataset_config is not None and not args.dataset_config.is_file():
        return _fail(f"--dataset-config {args.dataset_config}: no such file")
    try:
        settings = _settings()
    except SettingsError as exc:
        return _fail(str(exc))
    submitter = LocalSubmitter(settings)
    run_id = new_run_id()
    display = ProgressLine()
    print(f"run {run_id}: {len(submitter.definition.order())} steps", file=sys.stderr)
    try:
        record = submitter.run_foreground(
            request,
            run_id=run_id,
            trigger="cli",
            data_dir=args.data,
            dataset_config=args.dataset_config,
            progress=display,
        )
    except SubmissionError as exc:
        return _fail(exc.message)
    print(format_run(record))
    return 0 if record.status == "completed" else 1


class ProgressLine:
    """One stderr line per step transition, stamped with the time since start."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, event: Any) -> None:
        stamp = f"[{time.monotonic() - self.t0:7.1f}s]"
        if event.status == "running":
            text = "started"
        elif event.status == "completed":
            rss = f", peak {event.peak_rss_mb:.0f} MB" if event.peak_rss_mb else ""
            text = f"completed in {event.duration_s:.1f}s{rss}"
        elif event.status == "failed":
            text = f"FAILED after {event.duration_s or 0:.1f}s: {event.error}"
        elif event.status == "skipped" and event.duration_s is not None:
            text = f"skipped in {event.duration_s:.1f}s (nothing to do)"
        else:
            text = event.status
        print(f"{stamp} {event.node:<15} {text}", file=sys.stderr, flush=True)


def _submitter():
    from pipeline.backends import make_submitter

    return make_submitter(_settings())


def _with_submitter(action) -> int:
    from pipeline.settings import SettingsError
    from pipeline.submitter import RunNotFound, SubmissionError

    try:
        return action(_submitter())
    except SettingsError as exc:
        return _fail(str(exc))
    except RunNotFound as exc:
        return _fail(str(exc))
    except SubmissionError as exc:
        return _fail(exc.message)


def cmd_runs(args: argparse.Namespace) -> int:
    if args.limit < 1:
        return _fail(f"--limit {args.limit}: must be at least 1")

    def action(submitter) -> int:
        records = submitter.list_runs(args.limit)
        if args.json:
            print(json.dumps([r.model_dump(mode="json") for r in records], indent=2))
            return 0
        if not records:
            print("no runs yet")
            return 0
        print(f"{'RUN':<34} {'STATUS':<10} {'TRIGGER':<8} {'CREATED':<24} {'TIME':>8}  RESULT")
        for r in records:
            print(
                f"{r.run_id:<34} {r.status:<10} {r.trigger:<8} {r.created_at:<24} "
                f"{_elapsed(r):>8}  {_result(r)}"
            )
        return 0

    return _with_submitter(action)


def cmd_show(args: argparse.Namespace) -> int:
    def action(submitter) -> int:
        record = submitter.get(args.run_id)
        if args.json:
            print(json.dumps(record.model_dump(mode="json"), indent=2))
        else:
            print(format_run(record, logs=True))
        return 0

    return _with_submitter(action)


def cmd_cancel(args: argparse.Namespace) -> int:
    def action(submitter) -> int:
        before = submitter.get(args.run_id)
        if before.terminal:
            print(f"run {args.run_id} already {before.status}; nothing to cancel")
            return 1
        kwargs = {"wait_s": 15.0} if submitter.backend == "local" else {}
        record = submitter.cancel(args.run_id, **kwargs)
        print(f"run {args.run_id}: {record.status}")
        return 0

    return _with_submitter(action)


def cmd_sample_data(args: argparse.Namespace) -> int:
    if args.rows < 1:
        return _fail(f"--rows {args.rows}: must be at least 1")
    from steps._cli import StepError
    from steps.sample_data import write_sample_data

    print(f"generating {args.rows} rows (seed {args.seed}) ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        files = write_sample_data(
            args.out, rows=args.rows, seed=args.seed, parts=args.parts, drift=args.drift
        )
    except StepError as exc:
        return _fail(str(exc))
    size = sum(f.stat().st_size for f in files) / 1e6
    print(
        f"wrote {len(files)} file(s), {size:.1f} MB, to {args.out} "
        f"in {time.monotonic() - started:.1f}s",
        file=sys.stderr,
    )
    return 0


# -- formatting -----------------------------------------------------------------------


def _elapsed(record: Any) -> str:
    from datetime import datetime

    if not record.started_at:
        return "-"
    start = datetime.fromisoformat(record.started_at.replace("Z", "+00:00"))
    if record.finished_at:
        end = datetime.fromisoformat(record.finished_at.replace("Z", "+00:00"))
    else:
        from datetime import UTC

        end = datetime.now(UTC)
    return f"{(end - start).total_seconds():.1f}s"


def _result(record: Any) -> str:
    if record.status == "failed":
        return (record.error or "")[:80]
    drift = record.extra.get("drift") or {}
    if record.status == "completed" and drift.get("decision") == "skip":
        return f"skipped: {drift.get('reason')}"
    parts = []
    if record.gate:
        parts.append(str(record.gate.get("decision")))
    if record.model_version:
        parts.append(f"v{record.model_version}")
    return " ".join(parts)


def _drift_lines(drift: dict[str, Any]) -> list[str]:
    """check_drift's decision, then its figures: target rate, rows, the top PSIs."""
    verb = "skipped" if drift.get("decision") == "skip" else "retrain"
    lines = [f"drift: {verb}: {drift.get('reason')}"]
    if drift.get("target_rate_old") is not None and drift.get("target_rate_new") is not None:
        lines.append(
            f"  target rate {drift['target_rate_old']:.4f} -> {drift['target_rate_new']:.4f} "
            f"(PSI {drift.get('target_psi') or 0.0:.4f}); new rows {drift.get('new_rows')}"
        )
    top = list((drift.get("psi") or {}).items())[:3]
    if top:
        lines.append("  top PSI: " + ", ".join(f"{name} {value:.3f}" for name, value in top))
    return lines


def _candidate_lines(sweep: dict[str, Any]) -> list[str]:
    """Every candidate's validation figure, the winner marked (only when there were several)."""
    candidates = sweep.get("candidates") or []
    if len(candidates) < 2:
        return []
    lines = [f"candidates ({sweep.get('metric', 'valid_auc')}, the best goes to the gate):"]
    for entry in candidates:
        mark = "*" if entry.get("slot") == sweep.get("winner") else " "
        value = entry.get("valid_auc")
        figure = f"{value:.4f}" if isinstance(value, int | float) else "-"
        changes = ",".join(f"{k}={v}" for k, v in (entry.get("overrides") or {}).items())
        lines.append(f"  {mark} slot {entry.get('slot')}  {figure}  {changes or '(params)'}")
    return lines


def format_run(record: Any, *, logs: bool = False) -> str:
    """A run as a human reads it: steps with durations, then what came out.
    `logs` lists every step's log file (show); otherwise only failed steps' logs."""
    lines = [f"run {record.run_id}: {record.status} ({_elapsed(record)}, {record.backend})"]
    if record.error:
        lines.append(f"  error: {record.error}")
    if record.steps:
        lines.append("steps:")
        for step in record.steps:
            duration = f"{step.duration_s:.1f}s" if step.duration_s is not None else "-"
            rss = f"{step.peak_rss_mb:.0f} MB" if step.peak_rss_mb else ""
            lines.append(f"  {step.name:<15} {step.status:<10} {duration:>8} {rss:>8}")
            if step.error:
                lines.append(f"      error: {step.error}")
            if step.log_path and (logs or step.status == "failed"):
                lines.append(f"      log: {step.log_path}")
    drift = record.extra.get("drift")
    if drift:
        lines.extend(_drift_lines(drift))
    lines.extend(_candidate_lines(record.extra.get("sweep") or {}))
    if record.metrics:
        shown = ", ".join(f"{k}={v:.4f}" for k, v in record.metrics.items())
        lines.append(f"metrics (test split): {shown}")
    if record.gate:
        lines.append(f"gate: {record.gate.get('decision')}")
        for reason in record.gate.get("reasons") or []:
            lines.append(f"  - {reason}")
    if record.model_version:
        model = (record.request or {}).get("model_name", "model")
        promoted = record.extra.get("promoted")
        note = " (champion)" if promoted else " (not promoted)" if promoted is False else ""
        lines.append(f"model: {model} version {record.model_version}{note}")
    if record.endpoint:
        lines.append(f"endpoint: {record.endpoint}")
    smoke = record.extra.get("smoke_test")
    if smoke:
        if smoke.get("skipped_reason"):
            lines.append(f"smoke test: skipped ({smoke['skipped_reason']})")
        else:
            verdict = "passed" if smoke.get("passed") else "FAILED"
            lines.append(
                f"smoke test: {verdict}, {smoke.get('rows')} rows, "
                f"p50 {smoke.get('latency_ms_p50')} ms, max {smoke.get('latency_ms_max')} ms"
            )
    logs = next((s.log_path for s in record.steps if s.log_path), None)
    if logs:
        lines.append(f"logs: {Path(logs).parent}")
    return "\n".join(lines)
