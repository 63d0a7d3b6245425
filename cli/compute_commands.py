"""`aml-trigger compute ensure CONFIG`: the clusters the pipeline runs on (Azure ML).

Idempotent like `publish`: what exists and matches the config is left alone.
azure-ai-ml is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from cli.azure_commands import EXIT_FAILED, _fail, _guarded

# azure-core's seam (credential=, transport=): empty in use, set by the wire tests.
CLIENT_OPTIONS: dict[str, Any] = {}


def register(sub: argparse._SubParsersAction) -> None:
    compute = sub.add_parser(
        "compute",
        help="Manage the Azure ML compute clusters the pipeline runs on.",
        description="Azure ML compute clusters (AmlCompute) of the workspace in "
        "AML_SUBSCRIPTION_ID / AML_RESOURCE_GROUP / AML_WORKSPACE.",
    )
    actions = compute.add_subparsers(dest="compute_command", metavar="ACTION", required=True)
    ensure = actions.add_parser(
        "ensure",
        help="Create or update the clusters a config file lists.",
        description="Create the clusters of CONFIG (YAML or JSON: `clusters:` with name, "
        "vm_size, min_nodes, max_nodes, idle_time_before_scale_down, tier low_priority|"
        "dedicated, identity) that do not exist, update those whose scale settings or "
        "identity differ, and report those that already match. A new VM size or tier "
        "for an existing cluster is refused (Azure ML cannot change them).",
    )
    ensure.add_argument("config", metavar="CONFIG", help="Cluster config file.")
    ensure.add_argument(
        "--dry-run", action="store_true", help="Read the workspace and print the plan only."
    )
    ensure.add_argument("--json", action="store_true", help="Print the result as JSON.")
    ensure.set_defaults(func=cmd_compute_ensure)


def cmd_compute_ensure(args: argparse.Namespace) -> int:
    from pipeline.clusters import ClusterConfigError, ensure_clusters, load_cluster_config

    try:
        config = load_cluster_config(args.config)
    except ClusterConfigError as exc:
        return _fail(str(exc))

    def run(settings: Any) -> int:
        changes = ensure_clusters(
            settings,
            config,
            dry_run=args.dry_run,
            progress=None if args.json else lambda m: print(m, file=sys.stderr),
            **CLIENT_OPTIONS,
        )
        refused = [c for c in changes if c.action == "refused"]
        if args.json:
            print(json.dumps({"dry_run": args.dry_run,
                              "clusters": [asdict(c) for c in changes]}, indent=2))  # fmt: skip
        else:
            todo = sum(c.action in {"create", "update"} for c in changes)
            verb = "would change" if args.dry_run else "changed"
            print(f"{len(changes)} cluster(s): {todo} {verb}, {len(refused)} refused")
        return EXIT_FAILED if refused else 0

    return _guarded(run)
