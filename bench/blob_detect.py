"""Blob landed -> run submitted, with 100 and with 20,000 blobs already in the
container, on the local folder storage and on Azurite.

The watcher is the local host's own (function_app's blob function, the real
service, ledger and LocalSubmitter with its dispatcher paused so no pipeline
runs). Scans are driven from here instead of on the host's interval, so the
figure is the work a scan does to find a new drop, not the wait between scans:
with `serve --blob-interval S`, add up to S on top.

- old data: finished drop folders of 1,000 parts each, with the receipts an
  earlier host run left for them; "first scan" is the host's first pass over them
  after a restart (a full listing).
- idle scan: a scan when nothing changed; what a quiet container costs.
- landed -> submitted: a drop (one part + `_SUCCESS`) lands, then scans run back
  to back until the run is submitted.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.netutil import free_port

REPO = Path(__file__).resolve().parent.parent
PART = b"id,target,ps_ind_01\n1,0,2\n"
PER_FOLDER = 1000


class _Recorder:
    """The real submitter, noting when each drop folder was submitted."""

    def __init__(self, submitter) -> None:
        self._submitter = submitter
        self.submitted: dict[str, float] = {}

    def submit(self, request, **kwargs):
        record = self._submitter.submit(request, **kwargs)
        self.submitted[request.data] = time.perf_counter()
        return record

    def __getattr__(self, name):
        return getattr(self._submitter, name)


def _measure(settings, old_blobs: int, trials: int) -> dict[str, float]:
    import function_app
    import pipeline.local_submitter as local_submitter
    from pipeline.storage import open_storage
    from triggers import runtime
    from triggers.host.local_host import LocalHost

    local_submitter.dispatch = lambda settings, store: []  # no pipeline runs while measuring
    storage = open_storage(settings)
    container = settings.incoming_container
    # Old data: finished drops of PER_FOLDER parts, each closed by its marker.
    names = [f"drops/old-{i // PER_FOLDER:04d}/part-{i:06d}.csv" for i in range(old_blobs)]
    folders = sorted({name.rsplit("/", 1)[0] for name in names})
    markers = [f"{folder}/{settings.blob_marker_name}" for folder in folders]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda name: storage.put_blob(container, name, PART), names))
        list(pool.map(lambda name: storage.put_blob(container, name, b""), markers))
    landed_s = time.perf_counter() - t0

    recorder = _Recorder(local_submitter.LocalSubmitter(settings))
    service = runtime.build_service(settings, submitter=recorder)
    runtime.install(service)
    host = LocalHost(function_app.app, settings, port=free_port(), key="k", run_timers=False)
    watcher = host.watcher
    # The receipts an earlier host run left for that old data (the first-ever scan of
    # a big container, which fires every blob once, is a one-off not measured here).
    # As listed (a listing's ETag is unquoted, a put's answer quotes it).
    for blob in storage.list_blobs(container):
        for function in watcher.functions:
            watcher.receipts.succeeded(function.name, blob.name, blob.etag)
    try:
        t0 = time.perf_counter()
        watcher.scan()
        prime_s = time.perf_counter() - t0
        idle = []
        for _ in range(5):
            t0 = time.perf_counter()
            watcher.scan()
            idle.append(time.perf_counter() - t0)
        latencies = []
        for trial in range(trials):
            folder = f"drops/trial-{trial:03d}/"
            storage.put_blob(container, folder + "part-0.csv", PART)
            storage.put_blob(container, folder + settings.blob_marker_name, b"")
            t0 = time.perf_counter()
            deadline = t0 + 120
            while folder not in recorder.submitted and time.perf_counter() < deadline:
                watcher.scan()
            if folder in recorder.submitted:
                latencies.append(recorder.submitted[folder] - t0)
    finally:
        watcher.close()
        host.http.server.server_close()
        runtime.reset()
    latencies.sort()
    return {
        "landed_s": landed_s,
        "prime_s": prime_s,
        "idle_ms": statistics.median(idle) * 1000,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))] * 1000 if latencies else 0.0,
        "submitted": len(latencies),
        "trials": trials,
    }


def _settings(home: Path, connection: str | None):
    from pipeline.settings import Settings

    # Room for every trial's run, so each is submitted rather than queued behind
    # the first (the paused dispatcher never finishes one).
    env = {"AML_TRIGGER_HOME": str(home), "MAX_CONCURRENT_RUNS": "64"}
    if connection:
        env["AzureWebJobsStorage"] = connection
    return Settings.from_env(env)


class _Azurite:
    """Azurite from node_modules on the development-storage ports, fresh folder."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="aml-trigger-bench-azurite-"))
        exe = REPO / "node_modules" / ".bin" / "azurite-blob"
        if not exe.exists():
            raise SystemExit("Azurite is not installed: run `npm install` (make test does it)")
        self.proc = subprocess.Popen(
            [str(exe), "--silent", "--skipApiVersionCheck", "--loose", "--location",
             str(self.folder), "--blobHost", "127.0.0.1", "--blobPort", "10000"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import socket

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", 10000), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.2)
        self.close()
        raise SystemExit("Azurite did not open port 10000 within 30 s (is it taken?)")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:  # still flushing: it holds nothing we keep
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def main(sizes: tuple[int, ...] = (100, 20_000), trials: int = 20) -> None:
    print("== blob landed -> run submitted (scan work only; the scan interval adds to it)")
    stores = [("folder", None), ("azurite", "UseDevelopmentStorage=true")]
    for store, connection in stores:
        azurite = _Azurite() if connection else None
        try:
            for size in sizes:
                with tempfile.TemporaryDirectory(prefix="aml-trigger-bench-blob-") as home:
                    os.environ.pop("AzureWebJobsStorage", None)
                    m = _measure(_settings(Path(home), connection), size, trials)
                    if connection:  # a fresh container per size
                        _clear_container(connection)
                print(
                    f"  {store:<8} {size:>6} old blobs: landed in {m['landed_s']:5.1f} s, "
                    f"first scan {m['prime_s']:6.2f} s, idle scan {m['idle_ms']:8.1f} ms, "
                    f"landed->submitted p50 {m['p50_ms']:8.1f} ms p95 {m['p95_ms']:8.1f} ms "
                    f"({m['submitted']}/{m['trials']} submitted)"
                )
        finally:
            if azurite:
                azurite.close()


def _clear_container(connection: str) -> None:
    from pipeline.blob_storage import blob_service_client

    blob_service_client(connection).delete_container("incoming")
    time.sleep(1)  # the emulator finishes the delete before the name can be reused
