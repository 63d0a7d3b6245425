"""Commands for the Azure ML path: publish, schedule ..., compare.

They talk to the workspace in AML_SUBSCRIPTION_ID / AML_RESOURCE_GROUP /
AML_WORKSPACE with the azure-identity credential (`az login` on a laptop).
azure-ai-ml is imported only when one of them runs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

EXIT_FAILED = 1
EXIT_USAGE = 2


def register(sub: argparse._SubParsersAction) -> None:
    publish = sub.add_parser(
        "publish",
        help="Register the pipeline (environment, components) in the Azure ML workspace.",
        description="Register the step environment, every command component and the "
        "pipeline component from pipeline/*.yaml in the workspace, versioned by release "
        "and content hash. Unchanged code is a no-op. Prints the AML_PIPELINE_COMPONENT "
        "value the function app should use.",
    )
    publish.add_argument("--json", action="store_true", help="Print the result as JSON.")
    publish.set_defaults(func=cmd_publish)

    schedule = sub.add_parser(
        "schedule",
        help="Manage Azure ML schedules that run the training pipeline.",
        description="Azure ML job schedules of the published pipeline (cron with a time "
        "zone, or a recurrence). They run in the workspace without the function app.",
    )
    actions = schedule.add_subparsers(dest="schedule_command", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="Create or replace a schedule.",
        description="Create (or replace) a schedule. Give either --cron or --every.",
    )
    create.add_argument("name", metavar="NAME", help="Schedule name.")
    when = create.add_mutually_exclusive_group(required=True)
    when.add_argument(
        "--cron", help="5-field cron: minute hour day-of-month month day-of-week, e.g. '0 2 * * *'."
    )
    when.add_argument("--every", type=int, metavar="N", help="Recurrence interval, with --unit.")
    create.add_argument(
        "--unit",
        choices=["minute", "hour", "day", "week", "month"],
        default="day",
        help="Recurrence unit for --every (default day).",
    )
    create.add_argument("--at", metavar="HH:MM", help="Time of day for daily/weekly --every.")
    create.add_argument(
        "--time-zone",
        default="UTC",
        help="Time zone of the schedule, Windows name as Azure ML takes it (default UTC), "
        "e.g. 'W. Europe Standard Time'.",
    )
    create.add_argument(
        "--data", default="", help="Folder inside the incoming container (default: all of it)."
    )
    create.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="A training, split or gate parameter (repeatable), e.g. --param num_leaves=63.",
    )
    create.add_argument(
        "--deploy",
        choices=["none", "local", "aci", "aks"],
        default="none",
        help="Deployment target of each run (default none).",
    )
    create.add_argument("--compute", help="Compute target (default: AML_COMPUTE).")
    create.add_argument("--experiment", default="aml-trigger", help="Experiment name.")
    create.set_defaults(func=cmd_schedule_create)

    listing = actions.add_parser("list", help="List the workspace's schedules.")
    listing.add_argument("--json", action="store_true", help="Print JSON.")
    listing.set_defaults(func=cmd_schedule_list)
    for name, text in (
        ("enable", "Enable a schedule."),
        ("disable", "Disable a schedule (it stays defined)."),
        ("delete", "Delete a schedule (Azure ML deletes only disabled schedules)."),
        ("trigger", "Start the schedule's job once, now."),
    ):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("name", metavar="NAME", help="Schedule name.")
        action.set_defaults(func=cmd_schedule_action, action=name)

    compare = sub.add_parser(
        "compare",
        help="Show the jobs of one comparison group (one run fanned out over computes).",
        description="The Azure ML jobs of a comparison group side by side: compute, state, "
        "duration and studio link. GROUP is the run id returned by the submission.",
    )
    compare.add_argument("group", metavar="GROUP", help="Comparison group (the run id).")
    compare.add_argument("--json", action="store_true", help="Print JSON.")
    compare.set_defaults(func=cmd_compare)


def cmd_publish(args: argparse.Namespace) -> int:
    from pipeline.publish import BATCH_PIPELINE_YAML, VERIFY_PIPELINE_YAML, publish

    def run(settings: Any) -> int:
        result = publish(
            settings,
            # `aml-trigger score --azure` runs the first; POST /api/verifications the second.
            extra_pipelines=(BATCH_PIPELINE_YAML, VERIFY_PIPELINE_YAML),
            progress=lambda m: print(m, file=sys.stderr),
        )
        # A schedule stores its own copy of the job: point ours at what was just
        # published, or they keep running the old pipeline (pipeline/schedules.py).
        from pipeline.aml_submitter import AmlSubmitter
        from pipeline.schedules import Schedules
        from pipeline.submitter import SubmissionError

        try:
            followed = Schedules(AmlSubmitter(settings)).follow(result.pipeline_component)
            problem = None
        except SubmissionError as exc:
            followed, problem = [], exc.message
        for name in followed:
            print(f"schedule {name}: now runs {result.pipeline_component}", file=sys.stderr)
        if problem:
            print(
                f"error: published {result.pipeline_component}, but the schedules still run "
                f"the version they had: {problem}",
                file=sys.stderr,
            )
        status = EXIT_FAILED if problem else 0
        if args.json:
            print(
                json.dumps(
                    {
                        "version": result.version,
                        "pipeline_component": result.pipeline_component,
                        "assets": [vars(a) for a in result.assets],
                        "schedules_updated": followed,
                    },
                    indent=2,
                )
            )
            return status
        created = len(result.created)
        print(
            f"published version {result.version}: {created} created, "
            f"{len(result.assets) - created} already there",
            file=sys.stderr,
        )
        print(f"AML_PIPELINE_COMPONENT={result.pipeline_component}")
        return status

    return _guarded(run)


def parse_at(text: str | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if not text:
        return (), ()
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if not match:
        raise ValueError(f"--at {text!r}: expected HH:MM, e.g. 02:30")
    return (int(match.group(1)),), (int(match.group(2)),)


def cmd_schedule_create(args: argparse.Namespace) -> int:
    from cli.pipeline_commands import ParamError, build_request
    from pipeline.request import TrainingRequest
    from pipeline.schedules import Cron, Recurrence, Schedules, check_cron, check_recurrence

    try:
        base = build_request(args.param, deploy=args.deploy, experiment=args.experiment)
        request = TrainingRequest(
            **{
                **base.model_dump(),
                "data": args.data,
                "compute": [args.compute] if args.compute else [],
            }
        )
        if args.cron:
            when: Cron | Recurrence = Cron(check_cron(args.cron), time_zone=args.time_zone)
        else:
            hours, minutes = parse_at(args.at)
            when = check_recurrence(
                Recurrence(args.unit, args.every, hours, minutes, time_zone=args.time_zone)
            )
    except (ParamError, ValueError) as exc:
        return _fail(_one_line(exc))

    def run(settings: Any) -> int:
        created = Schedules(_submitter(settings)).create(args.name, request, when)
        print(_schedule_line(created))
        return 0

    return _guarded(run)


def cmd_schedule_list(args: argparse.Namespace) -> int:
    from pipeline.schedules import Schedules

    def run(settings: Any) -> int:
        found = Schedules(_submitter(settings)).list()
        if args.json:
            print(json.dumps(found, indent=2, default=str))
        elif not found:
            print("no schedules", file=sys.stderr)
        for item in [] if args.json else found:
            print(_schedule_line(item))
        return 0

    return _guarded(run)


def cmd_schedule_action(args: argparse.Namespace) -> int:
    from pipeline.schedules import Schedules

    def run(settings: Any) -> int:
        schedules = Schedules(_submitter(settings))
        if args.action == "enable":
            print(_schedule_line(schedules.enable(args.name)))
        elif args.action == "disable":
            print(_schedule_line(schedules.disable(args.name)))
        elif args.action == "delete":
            schedules.delete(args.name)
            print(f"deleted schedule {args.name}")
        else:
            job = schedules.trigger(args.name)
            print(f"schedule {args.name} started job {job or '(name not returned)'}")
        return 0

    return _guarded(run)


def cmd_compare(args: argparse.Namespace) -> int:
    def run(settings: Any) -> int:
        records = _submitter(settings).group_jobs(args.group)
        if not records:
            return _fail(f"no jobs in comparison group {args.group!r}")
        rows = [
            {
                "job": r.run_id,
                "compute": r.extra.get("compute"),
                "status": r.status,
                "aml_status": r.extra.get("aml_status"),
                "duration_s": _duration(r.started_at, r.finished_at),
                "studio_url": r.extra.get("studio_url"),
            }
            for r in sorted(records, key=lambda r: str(r.extra.get("compute")))
        ]
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"{'COMPUTE':<20} {'STATUS':<16} {'DURATION':>10}  JOB")
        for row in rows:
            duration = f"{row['duration_s']:.0f}s" if row["duration_s"] is not None else "-"
            print(f"{row['compute'] or '-':<20} {row['aml_status'] or row['status']:<16} "
                  f"{duration:>10}  {row['job']}")  # fmt: skip
        print("metrics: open each job's studio link (run metrics live in the workspace's MLflow)")
        return 0

    return _guarded(run)


# -- helpers ----------------------------------------------------------------------


def _submitter(settings: Any) -> Any:
    from pipeline.aml_submitter import AmlSubmitter

    return AmlSubmitter(settings)


def _guarded(run: Any) -> int:
    from pipeline.settings import Settings, SettingsError
    from pipeline.submitter import SubmissionError

    try:
        return run(Settings.from_env())
    except SettingsError as exc:
        return _fail(str(exc))
    except SubmissionError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_FAILED


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _schedule_line(item: dict) -> str:
    trigger = item.get("trigger", {})
    when = trigger.get("expression") or (
        f"every {trigger.get('interval')} {trigger.get('frequency')}"
        if trigger.get("frequency")
        else "?"
    )
    state = "enabled" if item.get("enabled") else "disabled"
    zone = trigger.get("time_zone", "UTC")
    return f"{item['name']}: {state}, {when} ({zone})"


def _duration(started: str | None, finished: str | None) -> float | None:
    from datetime import datetime

    if not started or not finished:
        return None
    try:
        return (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    except ValueError:
        return None
