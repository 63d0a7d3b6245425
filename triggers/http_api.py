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
from urllib.parse import urlencode, urlsplit

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
        from triggers.disclosure import Disclosure
        from triggers.validation import RequestError

        try:
            return handler(req)
        except (HttpError, RequestError) as exc:
            return error_response(exc.status, exc.code, exc.message, exc.details)
        except RunNotFound as exc:
            return error_response(404, "run_not_found", str(exc), [{"run_id": exc.run_id}])
        except SubmissionError as exc:
            status = 503 if exc.retryable or exc.code == "unavailable" else 502
            message = _disclosure().text(exc.message)
            return error_response(status, exc.code, f"the pipeline backend refused: {message}")
        except SettingsError as exc:
            # No service to ask for the home: it is what failed to build.
            return error_response(503, "misconfigured", Disclosure(None).text(str(exc)))
        except Exception:
            log.exception("unhandled error in %s", handler.__name__)
            return error_response(500, "internal_error", "internal error; see the service log")

    return wrapper


@_handles_errors
def submit_run(req: func.HttpRequest) -> func.HttpResponse:
    return _accept(req, "submit_http")


@_handles_errors
def submit_verification(req: func.HttpRequest) -> func.HttpResponse:
    """POST /api/verifications: a VerificationRequest (pipeline/verification.py). The
    answer is a run, exactly as POST /api/runs answers: 202 + status links, 200 for
    a repeated Idempotency-Key."""
    return _accept(req, "submit_verification")


def _accept(req: func.HttpRequest, submit: str) -> func.HttpResponse:
    """The body checks and answers shared by the routes that start a run; `submit`
    names the TriggerService method that validates the body and submits it."""
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
    outcome = getattr(service, submit)(
        HttpSubmission(body=body, idempotency_key=key, content_type=content_type)
    )
    if isinstance(outcome, DryRun):
        from triggers.dry_run import plan

        shown = plan(outcome.description, request=outcome.request, disclosure=_disclosure())
        return json_response(shown.model_dump(mode="json"))
    if isinstance(outcome, Skipped):
        raise HttpError(429, "concurrency_limit", outcome.reason)
    assert isinstance(outcome, Accepted)
    run = _disclosure().run(outcome.run)
    if outcome.note:
        run["note"] = outcome.note
    # Both answers point at the status route, so a caller following the asynchronous
    # request-reply pattern (Logic Apps) can wait for the run either way.
    links = _status_links(req, service.settings, outcome.run)
    return json_response(run, 202 if outcome.created else 200, links)


@_handles_errors
def list_runs(req: func.HttpRequest) -> func.HttpResponse:
    raw = req.params.get("limit", "20")
    detail = [{"path": "limit", "value": raw[:40], "message": "integer 1-200"}]
    # ASCII digits only: str.isdigit also takes '²', which int() then refuses.
    if not re.fullmatch(r"[0-9]{1,6}", raw, flags=re.ASCII):
        raise HttpError(
            400, "invalid_query", f"limit must be an integer from 1 to 200 (got {raw[:40]!r})",
            detail,
        )  # fmt: skip
    if not 1 <= int(raw) <= 200:
        raise HttpError(
            422, "invalid_query", f"limit must be an integer from 1 to 200 (got {raw!r})", detail
        )
    runs = runtime.service().list_runs(int(raw))
    return json_response({"runs": [_disclosure().run(r) for r in runs]})


@_handles_errors
def get_run(req: func.HttpRequest) -> func.HttpResponse:
    run_id = _run_id(req)
    return json_response(_disclosure().run(runtime.service().get_run(run_id)))


@_handles_errors
def run_status(req: func.HttpRequest) -> func.HttpResponse:
    """The status monitor of the asynchronous request-reply pattern: 202 + Location +
    Retry-After while the run is queued or running, then 200 + the run's summary (the
    callback's payload) for every ending. A failed or canceled run is still a status
    request that succeeded: callers branch on `status` (docs/logic-apps.md says why)."""
    from triggers.notify import run_link, run_summary

    service = runtime.service()
    record = service.get_run(_run_id(req))
    if not record.terminal:
        links = _status_links(req, service.settings, record)
        return json_response(_disclosure().run(record), 202, links)
    run_url = run_link(record, _base_url(req, service.settings))
    return json_response(run_summary(record, run_url=run_url, home=service.settings.home))


@_handles_errors
def cancel_run(req: func.HttpRequest) -> func.HttpResponse:
    run_id = _run_id(req)
    record = runtime.service().cancel_run(run_id)
    return json_response(_disclosure().run(record), 202)


def health(req: func.HttpRequest) -> func.HttpResponse:
    # Liveness only: says nothing about settings or the backend to anonymous callers.
    return json_response({"status": "ok"})


@_handles_errors
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    from triggers.openapi import openapi_document

    return json_response(openapi_document())


def _disclosure():
    """Answers show no server paths and no callback query strings (disclosure.py)."""
    from triggers.disclosure import Disclosure

    return Disclosure(runtime.service().settings.home)


def _base_url(req: func.HttpRequest, settings) -> str:
    """PUBLIC_BASE_URL (or the Azure host name) when configured, else the origin the
    request itself came to (the local host on whatever port it listens)."""
    if settings.public_base_url_configured:
        return settings.public_base_url.rstrip("/")
    parts = urlsplit(req.url)
    return f"{parts.scheme}://{parts.netloc}"


def _status_links(req: func.HttpRequest, settings, record) -> dict[str, str]:
    """Location of the run's status route, and Retry-After while the run is unfinished.

    Logic Apps polls Location without the custom headers of its first call, so a key
    sent as `x-functions-key` would not reach the poll. A key that came as `?code=`
    is already in the caller's URL and goes back into Location; a header key is never
    copied into a URL (URLs end up in logs and run histories)."""
    location = f"{_base_url(req, settings)}/api/runs/{record.run_id}/status"
    code = req.params.get("code")
    if code:
        location += "?" + urlencode({"code": code})
    headers = {"Location": location}
    if not record.terminal:
        headers["Retry-After"] = str(settings.status_retry_after_seconds)
    return headers


def _run_id(req: func.HttpRequest) -> str:
    from pipeline.runs import RUN_ID_PATTERN
    from pipeline.submitter import RunNotFound

    run_id = req.route_params.get("run_id", "")
    if not re.fullmatch(RUN_ID_PATTERN, run_id):
        raise RunNotFound(run_id)
    return run_id
