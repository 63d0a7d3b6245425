"""`aml-trigger endpoints status|stop`: the local deploy target's scoring servers.

A `local` deployment outlives the run that made it (it is detached, like an online
endpoint outlives its deploy job), so users need a way to see it and to stop it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    endpoints = sub.add_parser(
        "endpoints", help="Show or stop the local scoring endpoints (deploy target local)."
    )
    actions = endpoints.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = actions.add_parser("status", help="Each local endpoint's live deployment.")
    status.set_defaults(func=cmd_status)
    stop = actions.add_parser("stop", help="Stop every local scoring server under the home.")
    stop.set_defaults(func=cmd_stop)


def _home() -> Path | None:
    from pipeline.settings import Settings, SettingsError

    try:
        return Path(Settings.from_env().home)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def cmd_status(args: argparse.Namespace) -> int:
    from steps._cli import StepError
    from steps.local_endpoint import current

    home = _home()
    if home is None:
        return 2
    root = home / "endpoints"
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not names:
        print(f"no local endpoints under {home}")
        return 0
    for name in names:
        try:
            live = current(home, name)
        except StepError as exc:
            print(f"{name}: unreadable state ({exc})")
            continue
        if live is None:
            print(f"{name}: no live deployment")
            continue
        state = "serving" if live["alive"] else "stopped"
        print(
            f"{name}: {state} {live.get('deployment')} model {live.get('model_name')} "
            f"v{live.get('model_version')} at {live.get('scoring_uri')}"
        )
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from steps.local_endpoint import stop_all

    home = _home()
    if home is None:
        return 2
    stopped = stop_all(home)
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was serving")
    return 0
