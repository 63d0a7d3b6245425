"""`POST /api/runs` on the local host against a bare endpoint of the same framework.

Both servers are stdlib ThreadingHTTPServer (HTTP/1.1 keep-alive) in their own
process, driven by the same client (bench.loadgen) in this process:

- ours: `aml-trigger serve`'s LocalHost on function_app, defaults as shipped. Each
  POST is validated, keyed (a new body each time, so a new run), claimed in the
  SQLite ledger and submitted: the first goes to the local run store as `queued`,
  the rest wait in the ledger's queue under MAX_CONCURRENT_RUNS=1. The local
  dispatcher is paused in the server process, so no pipeline competes for the
  two cores while we measure the trigger path.
- bare: a handler that reads the body and answers 202 with a small JSON.
- durable: bare plus one SQLite insert of the body per request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from bench.loadgen import run_load
from bench.netutil import free_port, wait_ready
from triggers.host.http_server import HostHttpServer

REPO = Path(__file__).resolve().parent.parent
KEY = "bench-key"


def _serve_ours(port: int) -> None:
    import function_app
    import pipeline.local_submitter as local_submitter
    from pipeline.settings import Settings
    from triggers.host.local_host import LocalHost

    local_submitter.dispatch = lambda settings, store: []  # see the module docstring
    host = LocalHost(
        function_app.app, Settings.from_env(), port=port, key=KEY, run_timers=False,
        watch_blobs=False,
    )  # fmt: skip
    host.serve_forever()


class _Bare(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as the local host's handler

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.reply()

    def reply(self) -> None:
        body = b'{"run_id": "run-0", "status": "queued"}'
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args) -> None:
        pass


class _Durable(_Bare):
    """The bare endpoint plus one durable write per request (SQLite, WAL, as the
    ledger's settings): the floor for a 202 that promises not to lose the request."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.db.execute("INSERT INTO requests (body) VALUES (?)", (body,))
        self.reply()

    do_GET = _Bare.do_GET


def _serve_bare(port: int, handler=_Bare) -> None:
    server = HostHttpServer(("127.0.0.1", port), handler)  # same backlog as the local host
    if handler is _Durable:
        import sqlite3
        import threading

        path = Path(os.environ["AML_TRIGGER_HOME"]) / "requests.db"
        server.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        server.db.execute("PRAGMA journal_mode=WAL")
        server.db.execute("PRAGMA synchronous=NORMAL")
        server.db.execute("CREATE TABLE requests (id INTEGER PRIMARY KEY, body BLOB)")
        server.lock = threading.Lock()
    server.serve_forever()


def _start(kind: str, home: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "AML_TRIGGER_HOME": str(home)}
    for name in ("PIPELINE_BACKEND", "AzureWebJobsStorage", "AML_TRIGGER_FUNCTION_KEY"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.http_api", kind, str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    wait_ready(f"{base}/api/health")
    return proc, base


def _body(client: int, i: int) -> bytes:
    return json.dumps({"reason": f"bench {client}-{i}-{time.time_ns()}"}).encode()


def main(per_client_1: int = 300, per_client_32: int = 20) -> None:
    print("== POST /api/runs: local host vs a bare 202 endpoint (same framework, same client)")
    headers = {"Content-Type": "application/json", "x-functions-key": KEY}
    for concurrency, per_client in ((1, per_client_1), (32, per_client_32)):
        results = {}
        for kind in ("bare", "durable", "ours"):
            with tempfile.TemporaryDirectory(prefix="aml-trigger-bench-http-") as home:
                proc, base = _start(kind, Path(home))
                try:
                    results[kind] = run_load(
                        f"{kind} POST /api/runs",
                        f"{base}/api/runs",
                        body=None,
                        body_factory=_body,
                        headers=headers,
                        concurrency=concurrency,
                        per_client=per_client,
                    )
                    if kind == "ours":
                        _check_runs(base, results[kind].requests - results[kind].errors)
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
        for result in results.values():
            print("  " + result.row())
        for base in ("bare", "durable"):
            ratio = results["ours"].rps / results[base].rps if results[base].rps else 0.0
            print(f"  throughput ratio ours/{base} at c={concurrency}: {ratio:.2f}")


def _check_runs(base: str, accepted: int) -> None:
    """Every 202 must be a run the service knows about: count them over the API."""
    request = urllib.request.Request(f"{base}/api/runs?limit=200", headers={"x-functions-key": KEY})
    with urllib.request.urlopen(request, timeout=60) as response:
        runs = json.loads(response.read())["runs"]
    statuses = sorted({r["status"] for r in runs})
    print(f"  ours: {accepted} accepted; newest {len(runs)} listed, status {', '.join(statuses)}")


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "ours":
        _serve_ours(port)
    elif kind == "bare":
        _serve_bare(port)
    elif kind == "durable":
        _serve_bare(port, _Durable)
