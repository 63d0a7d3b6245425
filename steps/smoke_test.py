"""smoke_test: post real rows to a scoring URI and check the answers.

`smoke_test()` is the check itself; deploy runs it against a new deployment before
any traffic moves to it, and the Azure path reuses it with its auth headers. The
step reruns it against the live endpoint after deploy.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from steps._cli import StepError, StepParser, read_json, run_step, write_json

SAMPLE_ROWS = 50


class SmokeTestFailed(StepError):
    """The endpoint answered wrongly (status, shape, values) or not at all."""


def smoke_test(
    scoring_uri: str,
    rows: list[dict[str, Any]],
    headers: dict[str, str] | None = None,
    *,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Post 1 row (a few times) and up to 50 rows; raise SmokeTestFailed on a bad answer."""
    if not rows:
        raise SmokeTestFailed("smoke test: no sample rows to send")
    batches = [rows[:1]] * 3 + [rows[:SAMPLE_ROWS]] * 2
    latencies = []
    for batch in batches:
        started = time.perf_counter()
        status, body = _post(scoring_uri, {"data": batch}, headers or {}, timeout)
        latencies.append((time.perf_counter() - started) * 1000.0)
        _check_answer(scoring_uri, status, body, len(batch))
    return {
        "passed": True,
        "rows": len(rows[:SAMPLE_ROWS]),
        "latency_ms_p50": round(statistics.median(latencies), 2),
        "latency_ms_max": round(max(latencies), 2),
        "scoring_uri": scoring_uri,
        "skipped_reason": None,
    }


def _post(uri: str, payload: dict, headers: dict[str, str], timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(
        uri,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SmokeTestFailed(f"smoke test: {uri} did not answer ({reason})") from None


def _check_answer(uri: str, status: int, body: bytes, expected: int) -> None:
    excerpt = body[:300].decode("utf-8", "replace")
    if status != 200:
        raise SmokeTestFailed(
            f"smoke test: {uri} answered HTTP {status} to {expected} row(s): {excerpt}"
        )
    try:
        answer = json.loads(body)
    except ValueError:
        raise SmokeTestFailed(f"smoke test: {uri} answered non-JSON: {excerpt}") from None
    if isinstance(answer, str):  # some entry scripts return JSON encoded twice
        try:
            answer = json.loads(answer)
        except ValueError:
            pass
    probabilities = answer.get("probabilities") if isinstance(answer, dict) else None
    if not isinstance(probabilities, list) or len(probabilities) != expected:
        got = len(probabilities) if isinstance(probabilities, list) else "no"
        raise SmokeTestFailed(
            f"smoke test: {uri} returned {got} probabilities for {expected} row(s): {excerpt}"
        )
    for value in probabilities:
        if not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= 1:
            raise SmokeTestFailed(
                f"smoke test: {uri} returned probability {value!r}; accepted: numbers in [0, 1]"
            )


def sample_rows(prepared: Path, rows: int = SAMPLE_ROWS) -> list[dict[str, Any]]:
    """Raw-looking records (missing marker, original categories) from the test split."""
    from steps.prepared import load_dataset, load_split_frame

    dataset = load_dataset(prepared)
    frame, _ = load_split_frame(prepared, "test", dataset, rows=rows)
    return dataset.to_records(frame)


def run_smoke_step(deployment: Path, prepared: Path, out: Path) -> dict[str, Any]:
    deployed = read_json(deployment / "summary.json", what="deploy output")
    uri = deployed.get("scoring_uri")
    if deployed.get("skipped_reason") or not uri:
        reason = deployed.get("skipped_reason") or "deploy recorded no scoring URI"
        summary = {
            "passed": False,
            "rows": 0,
            "latency_ms_p50": None,
            "latency_ms_max": None,
            "scoring_uri": uri,
            "skipped_reason": f"deploy skipped: {reason}",
        }
    else:
        headers = _endpoint_headers(deployed)
        summary = smoke_test(uri, sample_rows(prepared), headers)
    write_json(out / "summary.json", summary)
    return summary


def _endpoint_headers(deployed: dict[str, Any]) -> dict[str, str] | None:
    """Auth for Azure online endpoints comes from the Azure helper, never from a file."""
    if deployed.get("target") in {"aci", "aks"}:
        from steps import online_endpoint

        getter = getattr(online_endpoint, "scoring_headers", None)
        if getter is not None:
            return getter(endpoint_name=deployed["endpoint_name"])
    return None


def _parser() -> argparse.ArgumentParser:
    parser = StepParser(
        prog="python -m steps.smoke_test",
        description="Post sample rows to the deployed endpoint and check the answers.",
    )
    parser.add_argument("--deployment", type=Path, required=True, help="deploy's output folder.")
    parser.add_argument("--prepared", type=Path, required=True, help="prep's output folder.")
    parser.add_argument("--out", type=Path, required=True, help="Output folder.")
    return parser


def _run(args: argparse.Namespace) -> None:
    summary = run_smoke_step(args.deployment, args.prepared, args.out)
    if summary["skipped_reason"]:
        print(f"smoke_test: skipped ({summary['skipped_reason']})", file=sys.stderr)
    else:
        print(
            f"smoke_test: passed; p50 {summary['latency_ms_p50']} ms, "
            f"max {summary['latency_ms_max']} ms",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    return run_step(_run, _parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
