"""The Azure ML workspace client: construction from Settings, and error mapping.

Credentials come only from azure-identity (`DefaultAzureCredential`: the Function
App's managed identity, a user-assigned one named by AZURE_CLIENT_ID, or a developer
login). Tests pass `credential=` and `transport=` (azure-core's seam), so the real SDK
runs unchanged against canned HTTP responses. azure.ai.ml is imported inside
`build_ml_client` only: importing it costs over a second.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pipeline.settings import Settings
from pipeline.submitter import SubmissionError

ROLE = "AzureML Data Scientist"
WORKSPACE_SETTINGS = ("AML_SUBSCRIPTION_ID", "AML_RESOURCE_GROUP", "AML_WORKSPACE")

# Bounded retries on 429/5xx and connection errors; azure-core honours Retry-After.
DEFAULT_RETRY_TOTAL = 3
DEFAULT_RETRY_BACKOFF = 0.8
# Total seconds one operation may take with its retries and Retry-After waits: an
# HTTP trigger must answer well inside the Functions front end's 230 s.
DEFAULT_TIMEOUT_S = 90

_ARM_KINDS = {
    "components": "component",
    "computes": "compute target",
    "jobs": "job",
    "schedules": "schedule",
    "batchEndpoints": "batch endpoint",
    "onlineEndpoints": "online endpoint",
    "deployments": "deployment",
    "environments": "environment",
    "models": "model",
    "datastores": "datastore",
    "codes": "code asset",
    "workspaces": "workspace",
}


def require_settings(settings: Settings, names: Iterable[str] = WORKSPACE_SETTINGS) -> None:
    """Raise one SubmissionError naming every missing setting among `names`."""
    wanted = set(names)
    missing = [n for n in settings.missing_for_aml() if n in wanted]
    if missing:
        raise SubmissionError(
            "not_configured",
            "the Azure ML backend needs these app settings, which are not set: "
            + ", ".join(missing),
        )


def default_credential() -> Any:
    """Managed identity in Azure (AZURE_CLIENT_ID selects a user-assigned one), the
    developer's Azure CLI / VS Code login locally. Never a key or a secret in settings."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


def build_ml_client(
    settings: Settings,
    *,
    credential: Any = None,
    transport: Any = None,
    retry_total: int = DEFAULT_RETRY_TOTAL,
    retry_backoff_factor: float = DEFAULT_RETRY_BACKOFF,
    timeout: float = DEFAULT_TIMEOUT_S,
    polling_interval: float | None = None,
    required: Iterable[str] = WORKSPACE_SETTINGS,
) -> Any:
    """An MLClient for the workspace in `settings`. Checks settings before any call;
    building the client sends nothing."""
    require_settings(settings, required)
    from azure.ai.ml import MLClient

    kwargs: dict[str, Any] = {
        "enable_telemetry": False,
        "retry_total": retry_total,
        "retry_backoff_factor": retry_backoff_factor,
        "timeout": timeout,
    }
    if transport is not None:
        kwargs["transport"] = transport
    if polling_interval is not None:
        kwargs["polling_interval"] = polling_interval
    return MLClient(
        credential if credential is not None else default_credential(),
        subscription_id=settings.aml_subscription_id,
        resource_group_name=settings.aml_resource_group,
        workspace_name=settings.aml_workspace,
        **kwargs,
    )


def arm_resource(url: str | None) -> str | None:
    """The innermost Azure ML resource a request URL names, e.g. "component
    aml_trigger_training version 3" or "compute target cpu-cluster"."""
    if not url:
        return None
    path = url.split("?", 1)[0]
    parts = [p for p in path.split("/") if p]
    found: list[str] = []
    for i, part in enumerate(parts[:-1]):
        if part in _ARM_KINDS:
            found.append(f"{_ARM_KINDS[part]} {parts[i + 1]}")
        elif part == "versions" and found:
            found[-1] += f" version {parts[i + 1]}"
    return found[-1] if found else None


def to_submission_error(exc: BaseException, *, action: str, workspace: str | None) -> Exception:
    """Map an azure-core / azure-identity / azure-ai-ml error raised while doing
    `action` onto a SubmissionError whose message says what to do. Messages carry the
    service's error text and resource names only: never a token or a header."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceExistsError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )

    ws = f"workspace {workspace!r}" if workspace else "the workspace"
    status = getattr(exc, "status_code", None)
    if status is None and getattr(exc, "response", None) is not None:
        status = getattr(exc.response, "status_code", None)
    url = None
    response = getattr(exc, "response", None)
    if response is not None and getattr(response, "request", None) is not None:
        url = response.request.url
    resource = arm_resource(url)
    detail = _service_message(exc)

    if isinstance(exc, ClientAuthenticationError) or status == 401:
        if status is None:
            return SubmissionError(
                "unauthorized",
                f"{action}: no Azure credential is available ({_first_line(str(exc))}). "
                "In Azure enable the Function App's managed identity (set AZURE_CLIENT_ID "
                "for a user-assigned identity); locally run `az login`.",
            )
        return SubmissionError(
            "unauthorized",
            f"{action}: Azure ML rejected the identity's token (HTTP 401). Check that the "
            "managed identity (or AZURE_CLIENT_ID, or your `az login`) belongs to the "
            f"workspace's tenant and holds the role '{ROLE}' on {ws}.",
        )
    if status == 403:
        return SubmissionError(
            "forbidden",
            f"{action}: the identity is not allowed to do this (HTTP 403{_on(resource)}). "
            f"Grant it the role '{ROLE}' on {ws}.{_detail(detail)}",
        )
    if isinstance(exc, ResourceNotFoundError) or status == 404:
        what = resource or "a resource"
        hint = ""
        if resource and resource.startswith("workspace"):
            hint = " Check AML_SUBSCRIPTION_ID, AML_RESOURCE_GROUP and AML_WORKSPACE."
        elif resource and resource.startswith("component"):
            hint = " Run `aml-trigger publish` and set AML_PIPELINE_COMPONENT to what it prints."
        elif resource and resource.startswith("compute"):
            hint = " Set AML_COMPUTE (or the request's `compute`) to a compute in the workspace."
        return SubmissionError(
            "not_found", f"{action}: {what} does not exist in {ws} (HTTP 404).{hint}"
        )
    if isinstance(exc, ResourceExistsError) or status == 409:
        return SubmissionError(
            "conflict", f"{action}: {resource or 'the resource'} already exists (HTTP 409)."
        )
    if status == 429:
        return SubmissionError(
            "throttled",
            f"{action}: Azure ML is throttling requests (HTTP 429) and retries ran out; "
            "try again later.",
            retryable=True,
        )
    if status is not None and status >= 500:
        return SubmissionError(
            "unavailable",
            f"{action}: Azure ML answered HTTP {status} after retries; try again later."
            f"{_detail(detail)}",
            retryable=True,
        )
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return SubmissionError(
            "unavailable",
            f"{action}: cannot reach Azure ML ({_first_line(str(exc))}); try again later.",
            retryable=True,
        )
    if isinstance(exc, HttpResponseError):
        return SubmissionError(
            "aml_error", f"{action}: Azure ML answered HTTP {status}.{_detail(detail)}"
        )
    # azure-ai-ml's own validation errors (bad YAML, bad input value) carry a readable message.
    if type(exc).__module__.startswith("azure.ai.ml"):
        return SubmissionError("invalid_request", f"{action}: {_first_line(str(exc))}")
    return exc if isinstance(exc, Exception) else RuntimeError(str(exc))


def _service_message(exc: BaseException) -> str | None:
    error = getattr(exc, "error", None)
    message = getattr(error, "message", None) if error is not None else None
    if not message:
        message = getattr(exc, "message", None) or str(exc)
    return _first_line(message) if message else None


def _first_line(text: str) -> str:
    """The message in one line: the SDK's validation errors are multi-line and
    coloured for a terminal."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    line = " ".join(part.strip() for part in plain.splitlines() if part.strip())
    # Bearer tokens never belong in a message, whatever the service echoed back.
    line = re.sub(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+", "Bearer <redacted>", line)
    return line[:400]


def _on(resource: str | None) -> str:
    return f" on {resource}" if resource else ""


def _detail(detail: str | None) -> str:
    return f" Service said: {detail}" if detail else ""
