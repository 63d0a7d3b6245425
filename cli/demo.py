"""`aml-trigger demo`: the whole story on one machine, through the real parts.

The local Functions host serves function_app.py; generated data lands in the
incoming container as a drop folder closed by its marker; the blob trigger turns
it into one pipeline run; the demo follows that run over the HTTP API as any
client would, prints the summary, scores a few rows on the deployed endpoint and
leaves the endpoint serving. Nothing here is a shortcut around the product: the
same handlers, ledger, executor and steps run as under `aml-trigger serve`.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

FOLLOW_TIMEOUT_S = 3600.0


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo",
        help="Run the whole story locally: host, data drop, one run, deployed model.",
        description="Start the local Functions host, land a generated data drop in the "
        "incoming container, follow the one run it starts over the HTTP API (prep, "
        "train, evaluate, register, deploy, smoke test), score a few rows on the "
        "deployed endpoint and print how to call everything yourself. Uses the "
        "embedded default (AML_TRIGGER_HOME, default .local/); no Azure needed.",
    )
    demo.add_argument(
        "--rows", type=int, default=100_000, help="Rows of generated data (default 100000)."
    )
    demo.add_argument("--seed", type=int, default=None, help="Data seed (default: a new one).")
    demo.add_argument(
        "--port", type=int, default=7071, help="HTTP port; a free one if taken (default 7071)."
    )
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.settings import Settings, SettingsError

    if args.rows < 1000:
        return _fail(f"--rows {args.rows}: the demo needs at least 1000 rows")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        return _fail(str(exc))
    if settings.pipeline_backend != "local":
        return _fail(
            f"PIPELINE_BACKEND={settings.pipeline_backend}: the demo runs the embedded "
            "default; unset PIPELINE_BACKEND (see docs/azure.md for the Azure ML path)"
        )

    import function_app
    from triggers import runtime
    from triggers.host.local_host import LocalHost

    port = args.port if _port_free(args.port) else _any_free_port()
    host = LocalHost(function_app.app, settings, port=port, run_timers=False, blob_interval_s=0.5)
    runtime.reset()
    host.start()
    try:
        _say(f"local Functions host serving {host.url}/api (home: {Path(settings.home).resolve()})")
        for blob in host.index.blobs:
            _say(f"blob trigger {blob.name} watching container {blob.container!r}")
        folder = _land_drop(settings, rows=args.rows, seed=args.seed)
        api = _Api(host.url, host.key)
        record = _follow(api, folder)
    finally:
        host.stop()
        runtime.reset()
    from cli.pipeline_commands import format_run

    print(format_run(record))
    if record.status != "completed":
        return 1
    endpoint = record.endpoint or _still_serving(settings, record)
    if endpoint:
        _score_sample(endpoint, settings, folder)
    _print_next_steps(settings, record, endpoint, key_generated=host.key_generated)
    return 0


# -- the data drop --------------------------------------------------------------------


def _land_drop(settings: Any, *, rows: int, seed: int | None) -> str:
    """Write generated parts into the incoming container under a new drop folder,
    the marker last (as a producer that finished writing would)."""
    import tempfile

    from pipeline.storage import open_storage
    from steps.sample_data import write_sample_data

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = f"{settings.blob_prefix}drops/demo-{stamp}/"
    seed = seed if seed is not None else int(time.time()) % 100_000
    storage = open_storage(settings)
    container = settings.incoming_container
    with tempfile.TemporaryDirectory(prefix="aml-trigger-demo-") as tmp:
        _say(f"generating {rows} rows of Porto Seguro-shaped data (seed {seed}) ...")
        files = write_sample_data(Path(tmp), rows=rows, seed=seed, parts=4)
        for path in files:
            storage.put_blob(container, folder + path.name, path.read_bytes())
            _say(f"landed {container}/{folder}{path.name} ({path.stat().st_size / 1e6:.1f} MB)")
    storage.put_blob(container, folder + settings.blob_marker_name, b"")
    _say(f"landed {container}/{folder}{settings.blob_marker_name}: the drop is complete")
    return folder


# -- following the run over the HTTP API ----------------------------------------------


class _Api:
    def __init__(self, base: str, key: str) -> None:
        self.base = base.rstrip("/") + "/api"
        self.key = key

    def get(self, path: str) -> Any:
        request = urllib.request.Request(self.base + path, headers={"x-functions-key": self.key})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


def _follow(api: _Api, folder: str) -> Any:
    """Wait for the run the drop started, then print each step transition until the
    run ends. Returns the final RunRecord."""
    from cli.pipeline_commands import ProgressLine
    from pipeline.runs import RunRecord

    deadline = time.monotonic() + FOLLOW_TIMEOUT_S
    run_id = None
    while run_id is None:
        if time.monotonic() > deadline:
            raise SystemExit(_fail(f"no run started for drop {folder} (see the host log)"))
        for run in api.get("/runs?limit=20")["runs"]:
            if (run.get("request") or {}).get("data") == folder:
                run_id = run["run_id"]
                break
        else:
            time.sleep(0.5)
    _say(f"blob trigger started run {run_id} (GET /api/runs/{run_id})")
    printer = ProgressLine()
    seen: dict[str, str] = {}
    while True:
        record = RunRecord.model_validate(api.get(f"/runs/{run_id}"))
        for step in record.steps:
            if step.status != "pending" and seen.get(step.name) != step.status:
                seen[step.name] = step.status
                printer(SimpleNamespace(node=step.name, **step.model_dump(exclude={"name"})))
        if record.terminal or time.monotonic() > deadline:
            return record
        time.sleep(0.5)


# -- after the run --------------------------------------------------------------------


def _still_serving(settings: Any, record: Any) -> str | None:
    """A rejected candidate is not deployed: say which champion serves instead."""
    from steps.local_endpoint import current

    # A request that names no endpoint is served from the settings' default.
    name = (record.request or {}).get("endpoint_name") or settings.deployment_defaults()[1]
    live = current(Path(settings.home), name) if name else None
    if not live or not live["alive"]:
        return None
    print(f"champion v{live.get('model_version')} keeps serving at {live['scoring_uri']}")
    return live["scoring_uri"]


def _score_sample(scoring_uri: str, settings: Any, folder: str) -> None:
    """Score three rows of the drop on the live endpoint, as a client would."""
    import csv

    part = next(
        (Path(settings.home) / "storage" / settings.incoming_container / folder).glob("*.csv*"),
        None,
    )
    if part is None:  # the drop lives in blob storage, not in a folder
        return
    import gzip

    opener = gzip.open if part.suffix == ".gz" else open
    with opener(part, "rt", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [next(reader) for _ in range(3)]
    for row in rows:
        row.pop("target", None)
    payload = {"data": [{k: _number(v) for k, v in row.items()} for row in rows]}
    request = urllib.request.Request(
        scoring_uri,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        _say(f"scoring {scoring_uri} failed: {exc}")
        return
    print(f"scored 3 rows of the drop on {scoring_uri}: {json.dumps(answer)}")


def _number(text: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _print_next_steps(
    settings: Any, record: Any, endpoint: str | None, *, key_generated: bool
) -> None:
    key_ref = "$AML_TRIGGER_FUNCTION_KEY"
    home = Path(settings.home).resolve()
    lines = [
        "",
        "next:",
        "  aml-trigger runs                      # every run, newest first",
        f"  aml-trigger show {record.run_id}",
        "  aml-trigger serve                     # the host alone; then, from another shell:",
        f'  curl -s -X POST http://127.0.0.1:7071/api/runs -H "x-functions-key: {key_ref}" \\',
        "       -H 'Content-Type: application/json' -H 'Idempotency-Key: my-first-run' \\",
        '       -d \'{"data": "' + record.request.get("data", "") + '", '
        '"reason": "manual retrain"}\'',
        f'  curl -s http://127.0.0.1:7071/api/runs/RUN_ID -H "x-functions-key: {key_ref}"',
    ]
    if endpoint:
        lines += [
            f"  curl -s -X POST {endpoint} -H 'Content-Type: application/json' "
            "-d '{\"data\": [{...one row...}]}'",
            "  aml-trigger endpoints status          # what is serving",
            "  aml-trigger endpoints stop            # stop the local scoring server(s)",
        ]
    if key_generated:
        lines.append(
            "  ($AML_TRIGGER_FUNCTION_KEY: export a secret of your own before `serve`, "
            "or use the key `serve` generates and prints)"
        )
    lines.append(f"  state of the embedded default: {home}")
    print("\n".join(lines))


# -- small helpers --------------------------------------------------------------------


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _any_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
