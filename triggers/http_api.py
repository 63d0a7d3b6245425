"""The HTTP API (contract in design.md): func.HttpRequest in, JSON HttpResponse out.

Every refusal is `{"error": {"code", "message", "details"}}` with a 4xx (or 502/503
when the backend refuses); an unexpected exception is logged and answered with a
generic 500 that carries no trace. Keys are the host's job (Azure's or the local
host's), so these handlers see only authorised requests.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable
from typing import Any

import azure.functions as func

from triggers import runtime

log = logging.getLogger("aml_trigger.http")

JSON = "application/json"


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str, details: list | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or []


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(payload, default=str), status_code=status, headers=headers, mimetype=JSON
    )


def error_response(
    status: int, code: str, message: str, details: list | None = None, headers=None
) -> func.HttpResponse:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return json_response(body, status, headers)


def _handles_errors(handler: Callable[..., func.HttpResponse]):
    @functools.wraps(handler)
    def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        from pipeline.settings import SettingsError
        from pipeline.submitter import RunNotFound, SubmissionError
        from triggers.validation import RequestError

        try:
            return handler(req)
        except (HttpError, RequestError) as exc:
            return error_response(exc.status, exc.code, exc.message, exc.details)
        except RunNotFound as exc:
            return error_response(404, "run_not_found", str(exc), [{"run_id": exc.run_id}])
        except SubmissionError as exc:
            status = 503 if exc.retryable or exc.code == "unavailable" else 502
            return error_response(status, exc.code, f"the pipeline backend refused: {exc.message}")
        except SettingsError as exc:
            return error_response(503, "misconfigured", str(exc))
        except Exception:
            log.exception("unhandled error in %s", handler.__name__)
            return error_response(500, "internal_error", "internal error; see the service log")

    return wrapper


@_handles_errors
def submit_run(req: func.HttpRequest) -> func.HttpResponse:
    from triggers.events import HttpSubmission
    from triggers.service import Accepted, DryRun, Skipped

    service = runtime.service()
    content_type = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
    body = req.get_body() or b""
    # An empty body asks for a run with every default; any body must say it is JSON.
    if body and content_type != JSON and not content_type.endswith("+json"):
        raise HttpError(
            415,
            "unsupported_media_type",
            f"Content-Type must be application/json (got {content_type or 'none'!r})",
        )
    limit = service.settings.request_max_bytes
    if len(body) > limit:
        raise HttpError(
            413,
            "payload_too_large",
            f"body is {len(body)} bytes; at most {limit} (REQUEST_MAX_BYTES) are accepted",
        )
    key = req.headers.get("idempotency-key")
    outcome = service.submit_http(
        HttpSubmission(body=body, idempotency_key=key, content_type=content_type)
    )
    if isinstance(outcome, DryRun):
        return json_response({"dry_run": True, "run_id": outcome.run_id, **outcome.description})
    if isinstance(outcome, Skipped):
        raise HttpError(429, "concurrency_limit", outcome.reason)
    assert isinstance(outcome, Accepted)
    run = outcome.run.model_dump(mode="json")
    if outcome.note:
        run["note"] = outcome.note
    if not outcome.created:
        return json_response(run, 200)
    return json_response(run, 202, {"Location": f"/api/runs/{outcome.run.run_id}"})


@_handles_errors
def list_runs(req: func.HttpRequest) -> func.HttpResponse:
    raw = req.params.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 200:
        raise HttpError(
            422,
            "invalid_query",
            f"limit must be an integer from 1 to 200 (got {raw!r})",
            [{"path": "limit", "value": raw, "message": "integer 1-200"}],
        )
    runs = runtime.service().list_runs(int(raw))
    return json_response({"runs": [r.model_dump(mode="json") for r in runs]})


@_handles_errors
def get_run(req: func.HttpRequest) -> func.HttpResponse:
    run_id = _run_id(req)
    return json_response(runtime.service().get_run(run_id).model_dump(mode="json"))


@_handles_errors
def cancel_run(req: func.HttpRequest) -> func.HttpResponse:
    run_id = _run_id(req)
    record = runtime.service().cancel_run(run_id)
    return json_response(record.model_dump(mode="json"), 202)


def health(req: func.HttpRequest) -> func.HttpResponse:
    # Liveness only: says nothing about settings or the backend to anonymous callers.
    return json_response({"status": "ok"})


@_handles_errors
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    from triggers.openapi import openapi_document

    return json_response(openapi_document())


def _run_id(req: func.HttpRequest) -> str:
    from pipeline.runs import RUN_ID_PATTERN
    from pipeline.submitter import RunNotFound

    run_id = req.route_params.get("run_id", "")
    if not re.fullmatch(RUN_ID_PATTERN, run_id):
        raise RunNotFound(run_id)
    return run_id
