"""A small closed-loop HTTP load generator: N threads, each with its own keep-alive
connection, each sending requests back to back for a fixed count.

Python threads share the 2 cores with the server under test, so absolute figures are
pessimistic; that is why every benchmark here reports a ratio to a baseline server
measured in the same run, on the same machine, with this same client.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    label: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def row(self) -> str:
        return (
            f"{self.label:<34} c={self.concurrency:<3} n={self.requests:<6} "
            f"{self.rps:8.1f} req/s  p50 {self.pct(0.50):7.2f} ms  "
            f"p99 {self.pct(0.99):7.2f} ms  errors {self.errors}"
        )


def run_load(
    label: str,
    url: str,
    *,
    body: bytes | None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
    concurrency: int = 1,
    per_client: int = 200,
    body_factory=None,
    ok_status: frozenset[int] = frozenset({200, 202}),
) -> LoadResult:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    start_gate = threading.Barrier(concurrency + 1)

    def client(index: int) -> None:
        nonlocal errors
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        mine: list[float] = []
        bad = 0
        start_gate.wait()
        for i in range(per_client):
            payload = body_factory(index, i) if body_factory else body
            t0 = time.perf_counter()
            try:
                conn.request(method, path, body=payload, headers=headers or {})
                resp = conn.getresponse()
                resp.read()
                if resp.status not in ok_status:
                    bad += 1
            except (OSError, http.client.HTTPException):
                bad += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
            mine.append((time.perf_counter() - t0) * 1000)
        conn.close()
        with lock:
            latencies.extend(mine)
            errors += bad

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    start_gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    return LoadResult(label, concurrency, len(latencies), errors, seconds, latencies)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
