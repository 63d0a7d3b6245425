"""`aml-trigger`: one entry point, one module per group of commands.

Each module in COMMAND_MODULES exposes `register(subparsers)`, adding its commands
with a `func(args) -> int` default. Modules are imported here, not at package
import, and heavy libraries are imported inside the commands that use them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    "cli.pipeline_commands",  # run, runs, show, cancel, sample-data
    "cli.demo",  # demo
    "cli.endpoint_commands",  # endpoints status|stop (local scoring servers)
    "cli.trigger_commands",  # serve, submit
    "cli.azure_commands",  # publish, schedule ..., compare (Azure ML)
    "cli.compute_commands",  # compute ensure (Azure ML clusters)
    "cli.score_commands",  # score (batch scoring: local, or a pipeline job on Azure ML)
    "cli.wait_commands",  # wait RUN (follow a run to its end, for CI)
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aml-trigger",
        description="Event-driven retraining and redeployment for Azure Machine Learning.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
