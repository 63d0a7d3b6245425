"""Commands of the trigger service: `serve` (the local Functions host) and `submit`."""

from __future__ import annotations

import argparse
import json
import sys
import uuid


def register(sub: argparse._SubParsersAction) -> None:
    from cli.pipeline_commands import add_candidate_flag

    serve = sub.add_parser(
        "serve",
        help="Run function_app locally: HTTP API, timers and blob watching.",
        description="Serve function_app.py as the Azure Functions host would: the HTTP "
        "API on 127.0.0.1 under /api (FUNCTION routes need AML_TRIGGER_FUNCTION_KEY, "
        "generated and printed once if unset), timers on their NCRONTAB schedules, and "
        "the blob trigger on the incoming container. Stop with Ctrl-C (or SIGTERM); "
        "nothing claimed is lost: the next start submits it.",
    )
    serve.add_argument("--port", type=int, default=7071, help="HTTP port (default 7071).")
    serve.add_argument(
        "--blob-interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="How often the incoming container is scanned (default 2).",
    )
    serve.add_argument("--no-blobs", action="store_true", help="Do not watch the container.")
    serve.add_argument("--no-timers", action="store_true", help="Do not run timer functions.")
    serve.set_defaults(func=cmd_serve)

    submit = sub.add_parser(
        "submit",
        help="Submit a training run through the trigger service (as POST /api/runs).",
        description="Build a TrainingRequest from flags and submit it through the same "
        "service as the HTTP API (validation, idempotency, concurrency limit, ledger), "
        "then print the run as JSON.",
    )
    submit.add_argument(
        "--data",
        default="",
        metavar="PREFIX",
        help="Folder inside the incoming container (e.g. drops/2026-11-22/); default all.",
    )
    submit.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="A training, split or gate parameter, or model_name/endpoint_name (repeatable).",
    )
    add_candidate_flag(submit)
    submit.add_argument(
        "--deploy",
        choices=["local", "none", "aci", "aks"],
        default=None,
        help="Deployment target (default: the DEPLOY_TARGET setting; unset: local on the "
        "local backend, none on aml, where local is refused).",
    )
    submit.add_argument("--experiment", default="aml-trigger", help="MLflow experiment name.")
    submit.add_argument("--reason", default="", help="Why this run is asked for.")
    submit.add_argument("--callback-url", help="URL notified with a JSON summary at the end.")
    submit.add_argument(
        "--dry-run", action="store_true", help="Validate and print the job; submit nothing."
    )
    submit.add_argument(
        "--idempotency-key",
        help="Repeats with the same key return the same run (default: a new run each time).",
    )
    submit.set_defaults(func=cmd_submit)


def cmd_serve(args: argparse.Namespace) -> int:
    from pipeline.settings import Settings, SettingsError
    from triggers import telemetry

    try:
        # LOG_FORMAT=json: one JSON object per line; the ids of the run on each line.
        telemetry.configure_logging()
        mode = telemetry.configure_tracing()
        settings = Settings.from_env()
    except (telemetry.TelemetryError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import os

    import function_app
    from triggers.host.local_host import LocalHost

    # Run links in callbacks point at this server unless PUBLIC_BASE_URL says otherwise.
    if not os.environ.get("PUBLIC_BASE_URL") and args.port != 7071:
        os.environ["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{args.port}"

    try:
        host = LocalHost(
            function_app.app,
            settings,
            port=args.port,
            blob_interval_s=args.blob_interval,
            watch_blobs=not args.no_blobs,
            run_timers=not args.no_timers,
        )
    except OSError as exc:
        print(f"error: cannot listen on 127.0.0.1:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a function that cannot be indexed (bad schedule, setting)
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def announce() -> None:
        if host.key_generated:
            print(
                f"function key (generated for this session; set AML_TRIGGER_FUNCTION_KEY to fix "
                f"one): {host.key}",
                file=sys.stderr,
            )
        routes = ", ".join(f"{'/'.join(sorted(f.methods))} /api/{f.route}" for f in host.index.http)
        print(f"serving {host.url}/api ({routes})", file=sys.stderr)
        for timer in host.index.timers:
            print(f"timer {timer.name}: {timer.schedule.text} (UTC)", file=sys.stderr)
        for blob in host.index.blobs:
            print(f"blob {blob.name}: watching container {blob.container!r}", file=sys.stderr)
        for queue in host.index.queues:
            print(f"queue {queue.name}: queue {queue.queue_name!r}", file=sys.stderr)
        for function in host.index.event_grid:
            print(f"event grid {function.name}: the local backend's run events",
                  file=sys.stderr)  # fmt: skip
        for name in host.index.disabled:
            print(f"disabled: {name}", file=sys.stderr)
        if mode != "off":
            print(f"traces: {mode}", file=sys.stderr)

    host.serve_forever(ready=announce)
    print("stopped", file=sys.stderr)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from cli.pipeline_commands import ParamError, build_request
    from pipeline.submitter import SubmissionError
    from triggers import runtime
    from triggers.service import Accepted, DryRun, Skipped
    from triggers.validation import RequestError, validate_training_request

    try:
        base = build_request(
            args.param, deploy=args.deploy, experiment=args.experiment, candidates=args.candidate
        )
        body = base.model_dump(mode="json")
        body.update(data=args.data, reason=args.reason, dry_run=args.dry_run)
        if args.callback_url:
            body["callback_url"] = args.callback_url
        request = validate_training_request(body)
        key = f"cli:{args.idempotency_key or uuid.uuid4().hex}"
        outcome = runtime.service().submit_request(request, trigger="cli", idempotency_key=key)
    except ParamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RequestError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        for detail in exc.details:
            where = detail.get("path", "")
            print(
                f"  {where}: {detail.get('message')} (got {detail.get('value')!r})", file=sys.stderr
            )
        return 2
    except SubmissionError as exc:
        print(f"error: the pipeline backend refused: {exc.message}", file=sys.stderr)
        return 1
    if isinstance(outcome, DryRun):
        print(json.dumps({"dry_run": True, "run_id": outcome.run_id, **outcome.description},
                         indent=2, default=str))  # fmt: skip
        return 0
    if isinstance(outcome, Skipped):
        print(f"skipped: {outcome.reason}", file=sys.stderr)
        return 1
    assert isinstance(outcome, Accepted)
    if not outcome.created:
        print(f"existing run for this idempotency key: {outcome.run.run_id}", file=sys.stderr)
    if outcome.note:
        print(outcome.note, file=sys.stderr)
    print(outcome.run.model_dump_json(indent=2))
    return 0
