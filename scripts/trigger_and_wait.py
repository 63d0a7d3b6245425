#!/usr/bin/env python3
"""Ask the deployed trigger service for a training run over HTTP and wait for it.

Used by .github/workflows/trigger-training.yml and .azure-pipelines/trigger-training.yml,
and by anyone with a function key: it needs only Python 3.8+ (standard library), not
this repository's packages. It POSTs /api/runs with an Idempotency-Key (a re-run of
the same CI job follows the run it already started instead of starting another),
then polls GET /api/runs/{id} until the run is completed, failed or canceled.

The function key is read from the environment variable AML_TRIGGER_FUNCTION_KEY,
never from the command line (argv shows up in process lists and CI logs).

Exit codes: 0 completed; 1 failed or canceled; 2 refused (bad key, invalid request,
wrong URL); 3 no outcome (timed out, or the service stayed unreachable).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

KEY_ENV = "AML_TRIGGER_FUNCTION_KEY"
TERMINAL = ("completed", "failed", "canceled")
EXIT_COMPLETED, EXIT_NOT_COMPLETED, EXIT_REFUSED, EXIT_NO_OUTCOME = 0, 1, 2, 3
RETRYABLE_STATUS = (408, 429, 500, 502, 503, 504)


class Refused(Exception):
    """The service said no in a way that retrying cannot fix."""


class Unavailable(Exception):
    """No usable answer this time (network, throttling, 5xx); worth retrying."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="POST a training request to <URL>/api/runs and wait for the run's outcome. "
        f"The function key comes from ${KEY_ENV}.",
    )
    p.add_argument(
        "--url", required=True, help="The Function App, e.g. https://app.azurewebsites.net"
    )
    p.add_argument("--idempotency-key", required=True, help="e.g. the commit sha; 1-200 chars")
    p.add_argument("--data", help="Folder of the incoming container to train on (default all).")
    p.add_argument("--reason", help="Why this run is asked for (kept with the run).")
    targets = ["local", "none", "aci", "aks"]
    p.add_argument("--deploy", choices=targets, help="Deploy target (overrides --body-file).")
    p.add_argument(
        "--deploy-default",
        choices=targets,
        help="Deploy target when neither --deploy nor --body-file names one "
        "(the service's own default is local, which suits only a laptop).",
    )
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="Run tag.")
    p.add_argument("--body-file", help="A JSON TrainingRequest to start from (flags override).")
    p.add_argument("--timeout", type=float, default=7200.0, help="Seconds to wait (default 7200).")
    p.add_argument("--interval", type=float, default=15.0, help="Seconds between polls (15).")
    p.add_argument(
        "--retries", type=int, default=5, help="Tries per call on 429/5xx/network errors (5)."
    )
    args = p.parse_args(argv)
    if args.timeout <= 0 or args.interval <= 0 or args.retries < 1:
        p.error("--timeout and --interval must be > 0, --retries at least 1")
    return args


def build_body(args: argparse.Namespace) -> dict:
    body: dict = {}
    if args.body_file:
        try:
            with open(args.body_file, encoding="utf-8") as f:
                body = json.load(f)
        except (OSError, ValueError) as exc:
            raise Refused(f"--body-file {args.body_file}: {exc}") from None
        if not isinstance(body, dict):
            raise Refused(f"--body-file {args.body_file}: expected a JSON object")
    for flag, field in (("data", "data"), ("reason", "reason"), ("deploy", "deploy_target")):
        value = getattr(args, flag)
        if value is not None:
            body[field] = value
    for item in args.tag:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise Refused(f"--tag {item!r}: expected KEY=VALUE")
        body.setdefault("tags", {})[key] = value
    if args.deploy_default and "deploy_target" not in body:
        body["deploy_target"] = args.deploy_default
    return body


def call(method: str, url: str, key: str, body: dict | None = None, idem: str | None = None):
    """One HTTP call; returns (status, JSON body). Raises Unavailable or Refused."""
    headers = {"x-functions-key": key, "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if idem is not None:
        headers["Idempotency-Key"] = idem
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, _json(response.read())
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, _json(exc.read())
        if status in RETRYABLE_STATUS:
            raise Unavailable(f"HTTP {status}: {_message(payload)}", _retry_after(exc)) from None
        return status, payload
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unavailable(f"cannot reach {url}: {reason}") from None


def with_retries(fn, retries: int, say, deadline: float):
    """fn() again after Unavailable, up to `retries` tries and never past `deadline`."""
    delay = 2.0
    for attempt in range(1, retries + 1):
        try:
            return fn()
        except Unavailable as exc:
            wait = min(exc.retry_after or delay, 60.0)
            if attempt == retries or time.monotonic() + wait > deadline:
                raise
            say(f"{exc}; try {attempt + 1} of {retries} in {wait:.0f}s")
            time.sleep(wait)
            delay *= 2
    raise AssertionError("unreachable")


def refusal(status: int, payload: dict, base: str) -> str:
    if status == 401:
        # A key of one function would not open the other routes: a host key opens all.
        return (
            f"the function key was refused (HTTP 401): set {KEY_ENV} to a host key of the "
            "app (az functionapp keys list -g <rg> -n <app> --query functionKeys.default)"
        )
    if status == 404:
        return f"HTTP 404 from {base}: {_message(payload)} (is --url the Function App's base URL?)"
    lines = [f"the request was refused (HTTP {status}): {_message(payload)}"]
    for d in (payload.get("error") or {}).get("details") or []:
        if isinstance(d, dict):
            lines.append(f"  {d.get('path', '?')}: {d.get('message')} (got {d.get('value')!r})")
    return "\n".join(lines)


def trigger_and_wait(args: argparse.Namespace, key: str, say) -> int:
    started = time.monotonic()
    deadline = started + args.timeout
    base = args.url.rstrip("/")
    base = base[: -len("/api")] if base.endswith("/api") else base
    body = build_body(args)

    def stamp(text: str) -> None:
        say(f"[{time.monotonic() - started:7.1f}s] {text}")

    def post():
        return call("POST", f"{base}/api/runs", key, body, args.idempotency_key)

    status, run = with_retries(post, args.retries, stamp, deadline)
    if status not in (200, 202):
        raise Refused(refusal(status, run, base))
    run_id = run.get("run_id")
    if not run_id:
        raise Refused(f"HTTP {status} without a run id from {base}/api/runs")
    if status == 202:
        stamp(f"submitted run {run_id} (Idempotency-Key {args.idempotency_key})")
    else:
        stamp(
            f"run {run_id} already exists for Idempotency-Key {args.idempotency_key}; following it"
        )
    if run.get("note"):
        stamp(run["note"])

    last = None
    while True:
        state = run.get("status")
        raw = (run.get("extra") or {}).get("aml_status")
        if (state, raw) != last:
            stamp(f"run {run_id}: {state}" + (f" (Azure ML: {raw})" if raw else ""))
            last = (state, raw)
        if state in TERMINAL:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            say(f"error: run {run_id} is still {state} after {args.timeout:g}s; it keeps running")
            return EXIT_NO_OUTCOME
        time.sleep(min(args.interval, remaining))  # one last poll right at the deadline

        def get():
            return call("GET", f"{base}/api/runs/{run_id}", key)

        status, fresh = with_retries(get, args.retries, stamp, deadline)
        if status != 200:
            raise Refused(refusal(status, fresh, base))
        run = fresh

    report(run, say)
    return EXIT_COMPLETED if run["status"] == "completed" else EXIT_NOT_COMPLETED


def report(run: dict, say) -> None:
    lines = [f"run {run['run_id']}: {run['status']}"]
    if run.get("error"):
        lines.append(f"  error: {run['error']}")
    for step in run.get("steps") or []:
        if step.get("status") == "failed":
            lines.append(f"  step {step.get('name')} failed: {step.get('error')}")
    if run.get("metrics"):
        lines.append("  metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in run["metrics"].items()))
    if run.get("model_version"):
        lines.append(f"  model version: {run['model_version']}")
    if run.get("endpoint"):
        lines.append(f"  endpoint: {run['endpoint']}")
    studio = (run.get("extra") or {}).get("studio_url")
    if studio:
        lines.append(f"  studio: {studio}")
    for line in lines:
        say(line)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:  # shown on the workflow run's page
        link = f" ([studio]({studio}))" if studio else ""
        with open(summary, "a", encoding="utf-8") as f:
            f.write(f"Training run `{run['run_id']}`: **{run['status']}**{link}\n")


def _json(raw: bytes) -> dict:
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return {"error": {"message": raw[:200].decode("utf-8", "replace")}}
    return value if isinstance(value, dict) else {}


def _message(payload: dict) -> str:
    error = payload.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or "no message")
    return "no message"


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    try:
        return float(exc.headers.get("Retry-After", ""))
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    key = os.environ.get(KEY_ENV, "")
    if not key:
        print(f"error: set {KEY_ENV} to the Function App's function key", file=sys.stderr)  # noqa: T201
        return EXIT_REFUSED

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)  # noqa: T201

    try:
        return trigger_and_wait(args, key, say)
    except Refused as exc:
        say(f"error: {exc}")
        return EXIT_REFUSED
    except Unavailable as exc:
        say(f"error: no answer from the service: {exc}")
        return EXIT_NO_OUTCOME


if __name__ == "__main__":
    sys.exit(main())
