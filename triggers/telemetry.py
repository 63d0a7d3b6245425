"""Telemetry: which run a log line or a span is about, and where traces go.

Log context. While an event is handled (`event(...)`) the trigger, and once the
service knows them (`bind(...)`) the run id and the idempotency key, live in
context variables. A LogRecord factory copies them onto every record created in
that context, whichever logger or handler: our JSON/text formatters, the Functions
worker's handler and azure-monitor-opentelemetry's handler (which turns record
attributes into Application Insights customDimensions) all see the same fields.
A factory rather than a logging.Filter because a filter only runs on the handler
or logger it is attached to, and the handlers in Azure are not ours.

Secrets. The factory also masks URL query strings (callback URLs carry SAS `sig=`,
host URLs `code=`), connection-string keys and function-key headers in messages.
Idempotency keys are printable ASCII of at most 200 characters (checked before a
key is bound), so they are safe to log as they are.

Traces (OpenTelemetry API; no-op unless configured): one span per event, named
`event <trigger>`, with children for validation, policy decisions, the ledger
claim and the submission. `configure_tracing` picks the exporter once per process:
the Functions worker's own Azure Monitor set-up, `configure_azure_monitor()` when
APPLICATIONINSIGHTS_CONNECTION_STRING is set, console spans for
OTEL_TRACES_EXPORTER=console, else nothing. See docs/telemetry.md.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

TRACER = "aml_trigger"
# azure-core logs every request and response at INFO. The Functions worker passes
# INFO on, so each storage or Azure ML round trip would be a row in `traces` (and
# billed): left at WARNING, where retries and failures still show. A level set
# explicitly (logging config, a debugging session) is kept.
SDK_HTTP_LOGGER = "azure.core.pipeline.policies.http_logging_policy"
LOG_FIELDS = ("run_id", "trigger", "idempotency_key")
# Span attributes are namespaced, as OpenTelemetry asks of custom attributes.
ATTR = "aml_trigger."

_run_id: ContextVar[str | None] = ContextVar("aml_trigger_run_id", default=None)
_trigger: ContextVar[str | None] = ContextVar("aml_trigger_trigger", default=None)
_key: ContextVar[str | None] = ContextVar("aml_trigger_idempotency_key", default=None)
_event_span: ContextVar[trace.Span | None] = ContextVar("aml_trigger_event_span", default=None)
_collector: ContextVar[dict[str, str] | None] = ContextVar("aml_trigger_collector", default=None)
_VARS = {"run_id": _run_id, "trigger": _trigger, "idempotency_key": _key}

# Event kinds that arrive from outside (requests in Application Insights); the
# housekeeping timers are consumers of their own schedule.
_SERVER_KINDS = frozenset({"http"})


class TelemetryError(ValueError):
    """A telemetry setting has a value this app cannot use; the message names it."""


# --- secrets ---------------------------------------------------------------------------
_URL_QUERY = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s?#'\"<>]*)\?[^\s#'\"<>]+")
_KEY_VALUE = re.compile(
    r"(?i)(\b(?:AccountKey|SharedAccessKey|SharedAccessSignature)="  # connection strings
    r"|[?&](?:sig|code)="  # a SAS or a function key in a query without its URL
    r"|\b(?:x-functions-key|Authorization)\s*[:=]\s*['\"]?(?:Bearer |SharedKey |Basic )?)"
    r"(?!<redacted>)[^\s;&'\",}]+"
)


def redact(text: str) -> str:
    """`text` without URL query strings and key=value secrets."""
    if "?" in text:
        text = _URL_QUERY.sub(r"\1?<redacted>", text)
    return _KEY_VALUE.sub(r"\1<redacted>", text)


# --- log context -----------------------------------------------------------------------
def current_ids() -> dict[str, str]:
    """The ids known in this context (only those that are set)."""
    return {name: value for name, var in _VARS.items() if (value := var.get()) is not None}


def bind(**ids: str | None) -> None:
    """Set run_id / trigger / idempotency_key for the rest of the current event (the
    event resets them when it ends) and put them on the event's span. Outside an
    event (a direct service call) nothing would reset them: then it does nothing."""
    span = _event_span.get()
    if span is None:
        return
    known = {name: value for name, value in ids.items() if value is not None}
    for name, value in known.items():
        _VARS[name].set(value)
    if (collected := _collector.get()) is not None:
        collected.update(known)
    _set_attributes(span, {ATTR + k: v for k, v in known.items()})


@contextmanager
def scoped(**ids: str | None) -> Iterator[None]:
    """Set ids for a block only (a loop over runs, outside any one event)."""
    tokens = [(_VARS[name], _VARS[name].set(value)) for name, value in ids.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


@contextmanager
def collect() -> Iterator[dict[str, str]]:
    """The ids an event inside the block binds, for a line logged after it ended
    (the local host's access log is written once the function has returned)."""
    collected: dict[str, str] = {}
    token = _collector.set(collected)
    try:
        yield collected
    finally:
        _collector.reset(token)


_factory_lock = threading.Lock()
_factory_installed = False


def install_log_context() -> None:
    """Wrap the LogRecord factory once per process (see the module doc for why), and
    put azure-core's per-request HTTP logging at WARNING (SDK_HTTP_LOGGER)."""
    global _factory_installed
    with _factory_lock:
        if _factory_installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _annotate(record)
            return record

        logging.setLogRecordFactory(factory)
        _factory_installed = True
        sdk_http = logging.getLogger(SDK_HTTP_LOGGER)
        if sdk_http.level == logging.NOTSET:
            sdk_http.setLevel(logging.WARNING)


def _annotate(record: logging.LogRecord) -> None:
    for name, var in _VARS.items():
        value = var.get()
        if value is not None and not hasattr(record, name):
            setattr(record, name, value)
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        record.trace_id = format(context.trace_id, "032x")
        record.span_id = format(context.span_id, "016x")
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: the handler reports it as it always does
        return
    cleaned = redact(message)
    if cleaned != message:
        record.msg, record.args = cleaned, ()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the ids (null when
    unknown), trace_id/span_id while a span is recording, exception when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name in LOG_FIELDS:
            entry[name] = getattr(record, name, None)
        for name in ("trace_id", "span_id"):
            if (value := getattr(record, name, None)) is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger: message [run_id=... trigger=... idempotency_key=...]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = " ".join(
            f"{name}={value}"
            for name in LOG_FIELDS
            if (value := getattr(record, name, None)) is not None
        )
        return redact(f"{text} [{ids}]" if ids else text)


def configure_logging(
    environ: Mapping[str, str] | None = None, *, stream=None, level: int = logging.INFO
) -> logging.Handler:
    """Root logging for `aml-trigger serve`: LOG_FORMAT=json or text (default)."""
    env = os.environ if environ is None else environ
    fmt = (env.get("LOG_FORMAT") or "text").strip().lower()
    if fmt not in ("json", "text"):
        raise TelemetryError(f"LOG_FORMAT must be 'json' or 'text' (got {env['LOG_FORMAT']!r})")
    install_log_context()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler


# --- where traces go -------------------------------------------------------------------
_tracing_lock = threading.Lock()
_tracing_mode: str | None = None


def configure_tracing(environ: Mapping[str, str] | None = None) -> str:
    """Pick the trace (and, for Azure Monitor, log) exporter once per process and
    return which: functions-worker, preconfigured, azure-monitor, console or off."""
    global _tracing_mode
    env = os.environ if environ is None else environ
    with _tracing_lock:
        if _tracing_mode is None:
            _tracing_mode = _configure(env)
        return _tracing_mode


def _configure(env: Mapping[str, str]) -> str:
    if env.get("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY", "").lower() in ("true", "1"):
        # The Python worker called configure_azure_monitor() before indexing the app
        # and attaches the host's trace context to each invocation: a second set-up
        # here would export everything twice.
        return "functions-worker"
    exporter = (env.get("OTEL_TRACES_EXPORTER") or "none").strip().lower()
    if exporter not in ("console", "none"):
        raise TelemetryError(
            f"OTEL_TRACES_EXPORTER must be 'console' or 'none' (got {exporter!r}); "
            "set APPLICATIONINSIGHTS_CONNECTION_STRING to export to Application Insights"
        )
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return "preconfigured"
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return "off"
    if env.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
        _configure_azure_monitor(env)
        return "azure-monitor"
    if exporter == "console":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        trace.set_tracer_provider(provider)
        return "console"
    return "off"


def _configure_azure_monitor(env: Mapping[str, str]) -> None:
    # Imported only here: the distro costs about 0.4 s to import and 1 s to set up.
    from azure.monitor.opentelemetry import configure_azure_monitor

    # The default resource detectors include the Azure VM one, which calls the
    # instance metadata endpoint while configuring; in App Service/Functions the
    # app_service and functions detectors say all there is. Overridable.
    os.environ.setdefault(
        "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "azure_app_service,azure_functions"
    )
    options: dict[str, Any] = {
        "connection_string": env["APPLICATIONINSIGHTS_CONNECTION_STRING"],
        # Only our loggers: the exporter's own retry warnings must not be exported.
        "logger_name": "aml_trigger",
    }
    auth = env.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "")
    if "authorization=aad" in auth.lower():
        # Local authentication disabled on the resource: Entra ID through azure-identity.
        from azure.identity import DefaultAzureCredential

        parts = dict(part.split("=", 1) for part in auth.split(";") if "=" in part)
        client_id = parts.get("ClientId")
        options["credential"] = DefaultAzureCredential(managed_identity_client_id=client_id)
    configure_azure_monitor(**options)


def setup(environ: Mapping[str, str] | None = None) -> str:
    """Log context and tracing, once; never lets telemetry break event handling."""
    install_log_context()
    try:
        return configure_tracing(environ)
    except TelemetryError as exc:
        global _tracing_mode
        with _tracing_lock:
            if _tracing_mode is None:
                _tracing_mode = "off"
                logging.getLogger("aml_trigger.telemetry").error("tracing is off: %s", exc)
        return "off"


# --- spans -----------------------------------------------------------------------------
def _tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER)


def _set_attributes(span: trace.Span, attributes: Mapping[str, Any]) -> None:
    for name, value in attributes.items():
        if value is not None:
            span.set_attribute(name, value if isinstance(value, bool | int | float) else str(value))


def _error_status(span: trace.Span, exc: BaseException) -> None:
    # Not record_exception: messages may quote client input; this one is redacted.
    code = getattr(exc, "code", None) or type(exc).__name__
    message = getattr(exc, "message", None) or str(exc)
    span.set_attribute("error.type", str(code))
    span.set_status(Status(StatusCode.ERROR, redact(f"{code}: {message}")[:500]))


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A child step of the current event (`validate`, `ledger claim`, `submit`)."""
    with _tracer().start_as_current_span(
        name, record_exception=False, set_status_on_exception=False
    ) as current:
        _set_attributes(current, {ATTR + k: v for k, v in attributes.items()})
        try:
            yield current
        except BaseException as exc:
            _error_status(current, exc)
            raise


@contextmanager
def submitting(entry: Any, *, backend: str) -> Iterator[trace.Span]:
    """The `submit` span of a ledger entry, its ids on every log line inside (also
    when a recovery or the queue submits it, outside any event)."""
    with (
        scoped(run_id=entry.run_id, trigger=entry.trigger, idempotency_key=entry.key),
        span("submit", backend=backend, run_id=entry.run_id, attempt=entry.attempts) as current,
    ):
        yield current


def decision(name: str, outcome: str, reason: str | None = None, **attributes: Any) -> None:
    """Record a pure policy decision as its own (instant) span, and on the event."""
    fields = {"decision": outcome, "reason": reason, **attributes}
    child = _tracer().start_span(f"policy {name}")
    _set_attributes(child, {ATTR + k: v for k, v in fields.items()})
    child.end()
    event_span = _event_span.get()
    if event_span is not None:
        _set_attributes(event_span, {ATTR + "decision": outcome, ATTR + "reason": reason})


@contextmanager
def event(
    trigger: str, carrier: Mapping[str, str] | None = None, **attributes: Any
) -> Iterator[trace.Span]:
    """Handle one event: the root span `event <trigger>` (or a child of the caller's
    trace: the Functions host's invocation, or a W3C `traceparent` in `carrier`),
    with the log context reset when it ends."""
    context = None
    if carrier and not trace.get_current_span().get_span_context().is_valid:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        context = TraceContextTextMapPropagator().extract(
            {k.lower(): v for k, v in carrier.items()}
        )
    tokens = [(var, var.set(None)) for var in (_run_id, _key)]
    tokens.append((_trigger, _trigger.set(trigger)))
    if (collected := _collector.get()) is not None:
        collected["trigger"] = trigger
    kind = SpanKind.SERVER if trigger in _SERVER_KINDS else SpanKind.CONSUMER
    with _tracer().start_as_current_span(
        f"event {trigger}",
        context=context,
        kind=kind,
        record_exception=False,
        set_status_on_exception=False,
    ) as root:
        tokens.append((_event_span, _event_span.set(root)))
        _set_attributes(root, {ATTR + "trigger": trigger})
        _set_attributes(root, {ATTR + k: v for k, v in attributes.items()})
        try:
            yield root
        except BaseException as exc:
            _error_status(root, exc)
            raise
        finally:
            for var, token in reversed(tokens):
                var.reset(token)


def record_outcome(outcome: Any) -> None:
    """Put the service's Outcome (Accepted/Skipped/Deferred/DryRun) on the event."""
    span = _event_span.get()
    run = getattr(outcome, "run", None)
    run_id = run.run_id if run is not None else getattr(outcome, "run_id", None)
    if run is not None:
        bind(run_id=run.run_id, idempotency_key=run.idempotency_key)
    if span is None:
        return
    fields = {
        "outcome": type(outcome).__name__.lower(),
        "run_id": run_id,
        "created": getattr(outcome, "created", None),
        "reason": getattr(outcome, "reason", None) or getattr(outcome, "note", None) or None,
    }
    _set_attributes(span, {ATTR + k: v for k, v in fields.items()})
