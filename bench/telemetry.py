"""What telemetry costs per event, and once per process.

Per event: POST /api/runs through the function handler (`entry.http`, the real
service on a SQLite ledger, an in-memory submitter), median of N posts, in fresh
interpreters: tracing off (the OpenTelemetry no-op tracer: what every event pays)
against the SDK recording every span into memory (what a configured exporter adds
before export, which happens on a background thread). Once: the first event with
APPLICATIONINSIGHTS_CONNECTION_STRING set, which imports and configures the Azure
Monitor distro (network blocked, so nothing is sent).

    python -m bench.telemetry
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_CHILD = r"""
import json, statistics, sys, time
from datetime import UTC, datetime
mode, home, posts = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "sdk":
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
import azure.functions as func
from pipeline.runs import RunRecord
from pipeline.settings import Settings
from triggers import entry, runtime

class Memory:
    backend = "local"
    def __init__(self):
        self.runs = {}
    def submit(self, request, *, run_id, trigger, idempotency_key=None):
        record = RunRecord(run_id=run_id, status="completed", trigger=trigger,
                           created_at=datetime.now(UTC).isoformat(),
                           idempotency_key=idempotency_key, request=request.model_dump(mode="json"))
        self.runs[run_id] = record
        return record
    def get(self, run_id):
        return self.runs[run_id]
    def list_runs(self, limit=20):
        return list(self.runs.values())[:limit]

settings = Settings.from_env({"AML_TRIGGER_HOME": home, "MAX_CONCURRENT_RUNS": "64"})
runtime.install(runtime.build_service(settings, submitter=Memory()))
def post(i):
    request = func.HttpRequest("POST", "http://localhost/api/runs", body=b'{"reason": "bench"}',
                               headers={"Content-Type": "application/json",
                                        "Idempotency-Key": f"bench-{i}"})
    t0 = time.perf_counter()
    response = entry.http("submit_run", request)
    took = time.perf_counter() - t0
    assert response.status_code == 202, response.get_body()
    return took
t0 = time.perf_counter()
post(-1)
first = time.perf_counter() - t0
samples = [post(i) for i in range(posts)]
spans = len(exporter.get_finished_spans()) if mode == "sdk" else 0
print(json.dumps({"first": first, "median": statistics.median(samples), "spans": spans}))
"""

_FIRST_EVENT_AZURE = r"""
import json, socket, sys, time
def _blocked(*args, **kwargs):
    raise OSError("network blocked by the benchmark")
socket.socket.connect = lambda self, address: _blocked()
socket.getaddrinfo = _blocked
from triggers import telemetry
t0 = time.perf_counter()
mode = telemetry.setup()
print(json.dumps({"mode": mode, "setup": time.perf_counter() - t0}))
"""


def _run(code: str, *args: str, env: dict[str, str] | None = None) -> dict:
    import os

    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APPLICATION"))}
    run_env.update(env or {})
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(posts: int = 300) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="aml-trigger-bench-telemetry-") as work:
        off = _run(_CHILD, "off", str(Path(work) / "off"), str(posts))
        sdk = _run(_CHILD, "sdk", str(Path(work) / "sdk"), str(posts))
        azure = _run(
            _FIRST_EVENT_AZURE,
            env={
                "APPLICATIONINSIGHTS_CONNECTION_STRING": (
                    "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
                    "IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/"
                ),
                "TMPDIR": work,
            },
        )
    per_post_spans = sdk["spans"] / (posts + 1)
    print(f"== telemetry cost per POST /api/runs (median of {posts}, fresh interpreters)")
    print(f"  tracing off (no-op tracer)          {off['median'] * 1e3:7.2f} ms")
    print(
        f"  SDK recording spans in memory       {sdk['median'] * 1e3:7.2f} ms"
        f"   ({per_post_spans:.0f} spans per POST)"
    )
    print(f"  ratio recorded/no-op                {sdk['median'] / off['median']:7.2f}")
    print(f"  first POST (service build), off     {off['first'] * 1e3:7.1f} ms")
    print("== once per process: first event with APPLICATIONINSIGHTS_CONNECTION_STRING")
    print(f"  import + configure_azure_monitor    {azure['setup']:7.2f} s   ({azure['mode']})")
    return {"off_ms": off["median"] * 1e3, "sdk_ms": sdk["median"] * 1e3, "azure_s": azure["setup"]}


if __name__ == "__main__":
    main()
