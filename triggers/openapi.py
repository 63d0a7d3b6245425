"""The OpenAPI 3.1 document of the HTTP API, built from the models themselves
(TrainingRequest and RunRecord), so the published schema cannot drift from what
the service validates."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel

REF = "#/components/schemas/{model}"


def _schemas(*models: type[BaseModel]) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def _error() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {"type": "array", "items": {"type": "object"}},
                },
            }
        },
    }


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=ref)}}},
    }


def _run_summary() -> dict[str, Any]:
    """The payload of GET /runs/{run_id}/status once a run has ended (triggers.notify's
    run_summary, the same JSON a callback_url receives)."""
    text, number = {"type": "string"}, {"type": "number"}
    maybe = {"type": ["string", "null"]}
    return {
        "type": "object",
        "required": ["run_id", "status", "metrics", "gate_decision", "model_version"],
        "properties": {
            "run_id": text,
            "status": {"enum": ["completed", "failed", "canceled"]},
            "trigger": text,
            "idempotency_key": maybe,
            "finished_at": maybe,
            "metrics": {"type": "object", "additionalProperties": number},
            "gate_decision": {**maybe, "description": "ChampionGate decision (promote/reject)."},
            "gate_reasons": {"type": "array", "items": text},
            "model_version": maybe,
            "endpoint": {**maybe, "description": "Scoring URI of the serving endpoint."},
            "run_url": {**text, "description": "Azure ML studio link, or this API's run."},
            "error": {**maybe, "description": "Why the run failed."},
        },
    }


def _status_headers(retry_after: bool) -> dict[str, Any]:
    headers: dict[str, Any] = {
        "Location": {
            "description": "Absolute URL of GET /runs/{run_id}/status; carries `?code=` only "
            "when the request's key came as `?code=` (pollers such as Logic Apps do not "
            "re-send headers).",
            "schema": {"type": "string", "format": "uri"},
        }
    }
    if retry_after:
        headers["Retry-After"] = {
            "description": "Seconds to wait before polling Location (STATUS_RETRY_AFTER_SECONDS).",
            "schema": {"type": "integer", "minimum": 1},
        }
    return headers


def _run_or_plan(description: str) -> dict[str, Any]:
    """200 of the submitting routes: the existing run of a repeat, or a dry run's plan."""
    either = [{"$ref": REF.format(model="RunRecord")}, {"$ref": REF.format(model="DryRunPlan")}]
    return {
        "description": description,
        "content": {"application/json": {"schema": {"anyOf": either}}},
        "headers": _status_headers(retry_after=True),
    }


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed JSON (with its position), JSON nested deeper than 32 levels or an "
        "integer longer than 4300 digits; a query parameter that is not a number; an "
        "unreadable Content-Length.",
        401: "Missing or wrong function key.",
        404: "No such run.",
        413: "Body larger than REQUEST_MAX_BYTES.",
        415: "Content-Type is not application/json.",
        422: "Invalid fields, each named by JSON path with its value and what is accepted; "
        "or an Idempotency-Key reused with another body.",
        429: "Concurrency limit reached and CONCURRENCY_POLICY=skip.",
        502: "The pipeline backend refused the submission.",
        503: "The backend is unavailable or the app is misconfigured.",
    }
    answers = {str(c): _json("Error", text[c]) for c in codes}
    if 401 in codes:  # the host answers it, as Azure's does: no body
        answers["401"] = {"description": text[401] + " Empty body, as Azure's host answers."}
    return answers


@functools.cache
def openapi_document() -> dict[str, Any]:
    from pipeline.request import TrainingRequest
    from pipeline.runs import RunRecord
    from pipeline.verification import VerificationRequest
    from triggers.dry_run import DryRunPlan

    schemas = _schemas(TrainingRequest, VerificationRequest, RunRecord, DryRunPlan)
    schemas["Error"] = _error()
    schemas["RunSummary"] = _run_summary()
    schemas["RunList"] = {
        "type": "object",
        "properties": {"runs": {"type": "array", "items": {"$ref": REF.format(model="RunRecord")}}},
    }
    run_id = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}
    keyed = [{"functionKey": []}, {"functionKeyQuery": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "aml-trigger",
            "version": "1",
            "description": "Submit and follow training runs of the Azure ML pipeline. "
            "Besides the answers listed per operation, the host itself answers 401 and 404 "
            "with an empty body (as Azure's host does); the local host also 408 to a too "
            "slow client and 503 with Retry-After beyond its connection limit.",
        },
        "servers": [{"url": "/api"}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code"},
            },
        },
        "security": keyed,
        "paths": {
            "/runs": {
                "post": {
                    "operationId": "submitRun",
                    "summary": "Validate a TrainingRequest and start (or find) its run.",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "maxLength": 200},
                            "description": "Repeats with the same key return the same run. "
                            "Absent: the key is derived from the body and the UTC date.",
                        }
                    ],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": REF.format(model="TrainingRequest")}
                            }
                        },
                    },
                    "responses": {
                        "202": {
                            **_json("RunRecord", "Run accepted; Location is its status."),
                            "headers": _status_headers(retry_after=True),
                        },
                        "200": _run_or_plan(
                            "Repeat: the existing run, with Location, and Retry-After while "
                            "it is unfinished; or, for `dry_run: true`, the DryRunPlan (no "
                            "headers, nothing recorded)."
                        ),
                        **_errors(400, 401, 413, 415, 422, 429, 502, 503),
                    },
                },
                "get": {
                    "operationId": "listRuns",
                    "summary": "Recent runs, newest first.",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 200},
                        }
                    ],  # fmt: skip
                    "responses": {"200": _json("RunList", "Runs."), **_errors(400, 401, 422)},
                },
            },
            "/verifications": {
                "post": {
                    "operationId": "submitVerification",
                    "summary": "Validate a VerificationRequest (a model trained elsewhere) and "
                    "start (or find) its run: test endpoint, HTTP scoring, the ChampionGate.",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "maxLength": 200},
                            "description": "As for POST /runs.",
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": REF.format(model="VerificationRequest")}
                            }
                        },
                    },
                    "responses": {
                        "202": {
                            **_json("RunRecord", "Verification accepted; Location is its status."),
                            "headers": _status_headers(retry_after=True),
                        },
                        "200": _run_or_plan(
                            "Repeat: the existing verification run; or a dry run's plan."
                        ),
                        **_errors(400, 401, 413, 415, 422, 429, 502, 503),
                    },
                },
            },
            "/runs/{run_id}": {
                "get": {
                    "operationId": "getRun",
                    "parameters": [run_id],
                    "responses": {"200": _json("RunRecord", "The run."), **_errors(401, 404)},
                }
            },
            "/runs/{run_id}/status": {
                "get": {
                    "operationId": "getRunStatus",
                    "summary": "Asynchronous request-reply status: 202 until the run ends.",
                    "parameters": [run_id],
                    "responses": {
                        "202": {
                            **_json("RunRecord", "Queued or running; poll Location again."),
                            "headers": _status_headers(retry_after=True),
                        },
                        "200": _json(
                            "RunSummary",
                            "The run ended: completed, failed or canceled (branch on status).",
                        ),
                        **_errors(401, 404),
                    },
                }
            },
            "/runs/{run_id}/cancel": {
                "post": {
                    "operationId": "cancelRun",
                    "parameters": [run_id],
                    "responses": {
                        "202": _json("RunRecord", "Cancellation requested."),
                        **_errors(401, 404, 502),
                    },
                }
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "security": [],
                    "responses": {"200": {"description": "The app is up."}},
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "security": [],
                    "responses": {"200": {"description": "This document."}},
                }
            },
        },
    }
