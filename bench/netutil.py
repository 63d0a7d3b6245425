"""Ports and readiness for the servers the benchmarks start."""

from __future__ import annotations

import socket
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float = 90.0) -> None:
    """Until `url` answers 2xx; SystemExit naming the server if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if 200 <= resp.status < 300:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"server at {url} did not become ready in {timeout:.0f} s")
