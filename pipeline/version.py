"""Which code a run used: recorded on every model version as lineage."""

from __future__ import annotations

import subprocess
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent


def code_version() -> str:
    """`<git short sha>` (`-dirty` if tracked files changed), else the installed
    package version, else `unknown`. Never raises: a missing git must not stop a run."""
    try:
        sha = _git("rev-parse", "--short=12", "HEAD")
        if sha:
            dirty = _git("status", "--porcelain", "--untracked-files=no")
            return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return version("aml-trigger")
    except Exception:  # noqa: BLE001 - any metadata problem means "unknown"
        return "unknown"


def _git(*args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(_REPO), *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return result.stdout.strip()
