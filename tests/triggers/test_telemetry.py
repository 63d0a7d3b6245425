"""Telemetry: one trace per event (event -> validate/policy -> ledger -> submit), the run
id, trigger and idempotency key on every log line of an event, and no secret in any log."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import azure.functions as func
import pytest
import requests
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from triggers import entry, runtime, telemetry

REPO = Path(__file__).resolve().parents[2]
KEY = "fk-" + "7" * 40  # the function key: must never reach a log line


@pytest.fixture(scope="session")
def _span_exporter() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the global provider can be set once
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def spans(_span_exporter):
    _span_exporter.clear()
    telemetry.install_log_context()
    yield _span_exporter
    _span_exporter.clear()


@pytest.fixture
def records():
    """Every log record created while the test runs (any logger, DEBUG and up)."""
    captured: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    handler = Keep(logging.DEBUG)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield captured
    root.removeHandler(handler)
    root.setLevel(previous)


def _post(body: dict, key: str | None = None, headers: dict | None = None) -> func.HttpResponse:
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if key:
        all_headers["Idempotency-Key"] = key
    request = func.HttpRequest(
        "POST", "http://localhost/api/runs", headers=all_headers, body=json.dumps(body).encode()
    )
    return entry.http("submit_run", request)


def _by_name(finished) -> dict:
    return {span.name: span for span in finished}


class LoggingSubmitter:
    """The conftest fake, logging as a real submitter does while it starts a run."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.backend = inner.backend

    def submit(self, request, **kwargs):
        logging.getLogger("aml_trigger.pipeline.local").info("starting the pipeline")
        return self.inner.submit(request, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture
def logging_service(make_service, fake_submitter):
    service = make_service(submitter=LoggingSubmitter(fake_submitter))
    runtime.install(service)
    yield service
    runtime.reset()


def test_http_post_is_one_trace_from_event_to_submission(spans, logging_service):
    response = _post({"reason": "traced"}, key="trace-me-1")
    run_id = json.loads(response.get_body())["run_id"]
    assert response.status_code == 202

    finished = spans.get_finished_spans()
    assert len({s.context.trace_id for s in finished}) == 1  # one trace for the event
    named = _by_name(finished)
    assert {"event http", "validate", "ledger claim", "policy admit", "submit"} <= set(named)
    root = named["event http"]
    assert root.parent is None
    assert all(s.parent.span_id == root.context.span_id for s in finished if s is not root)
    assert root.attributes["aml_trigger.run_id"] == run_id
    assert root.attributes["aml_trigger.idempotency_key"] == "http:trace-me-1"
    assert root.attributes["http.response.status_code"] == 202
    assert named["policy admit"].attributes["aml_trigger.decision"] == "submit"
    assert named["ledger claim"].attributes["aml_trigger.created"] is True
    submit = named["submit"].attributes
    assert submit["aml_trigger.run_id"] == run_id and submit["aml_trigger.backend"] == "local"
    # Ordered as the flow: validation ends before the claim, the claim before the submit.
    assert named["validate"].end_time <= named["ledger claim"].start_time
    assert named["ledger claim"].end_time <= named["submit"].start_time


def test_a_repeat_is_its_own_trace_naming_the_existing_run(spans, logging_service):
    first = _post({}, key="repeat-1")
    second = _post({}, key="repeat-1")
    assert (first.status_code, second.status_code) == (202, 200)
    roots = [s for s in spans.get_finished_spans() if s.name == "event http"]
    assert len({r.context.trace_id for r in roots}) == 2
    run_id = json.loads(second.get_body())["run_id"]
    assert [r.attributes["aml_trigger.run_id"] for r in roots] == [run_id, run_id]
    claim = [s for s in spans.get_finished_spans() if s.name == "ledger claim"][1]
    assert claim.attributes["aml_trigger.created"] is False


def test_invalid_body_marks_validation_failed_without_quoting_the_callback(spans, installed):
    response = _post({"callback_url": "ftp://example.org/hook?sig=SIG-NEVER-IN-TRACES"})
    assert response.status_code == 422
    validate = _by_name(spans.get_finished_spans())["validate"]
    assert validate.status.status_code == trace.StatusCode.ERROR
    assert validate.attributes["error.type"] == "invalid_request"
    dumped = "".join(s.to_json() for s in spans.get_finished_spans())
    assert "SIG-NEVER-IN-TRACES" not in dumped


def test_client_traceparent_is_continued(spans, installed):
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    _post({}, headers={"traceparent": parent})
    root = _by_name(spans.get_finished_spans())["event http"]
    assert format(root.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert format(root.parent.span_id, "016x") == "b7ad6b7169203331"


def test_blob_skipped_by_a_filter_is_one_trace_with_the_reason(
    spans, installed, fake_submitter, landed
):
    entry.blob(landed("notes/readme.txt", b"read me,now"))
    finished = spans.get_finished_spans()
    assert len({s.context.trace_id for s in finished}) == 1
    named = _by_name(finished)
    root, policy = named["event blob"], named["policy blob filter"]
    assert root.attributes["aml_trigger.outcome"] == "skipped"
    assert "'notes/readme.txt' is not data" in root.attributes["aml_trigger.reason"]
    assert policy.attributes["aml_trigger.decision"] == "skip"
    assert policy.parent.span_id == root.context.span_id
    assert "submit" not in named and fake_submitter.submissions == []


def test_a_drop_closed_by_its_delayed_message_is_a_blob_event(
    spans, installed, landed, clock, drop_queue
):
    entry.blob(landed("drops/d/part-0.csv"))
    spans.clear()
    clock.advance(installed.settings.blob_quiet_seconds + 1)
    [message] = drop_queue.receive(lease_s=60)
    entry.drop_window(func.QueueMessage(id=message.id, body=message.text.encode()))
    named = _by_name(spans.get_finished_spans())
    assert named["event blob"].attributes["aml_trigger.drop"] == "incoming/drops/d/"
    assert named["event blob"].attributes["aml_trigger.outcome"] == "accepted"
    assert "submit" in named


def test_a_drop_closed_by_the_safety_net_is_a_blob_event(spans, installed, landed, clock):
    entry.blob(landed("drops/d/part-0.csv"))
    spans.clear()
    clock.advance(installed.settings.blob_quiet_seconds + 1)
    entry.safety_net()  # its delayed message was lost
    named = _by_name(spans.get_finished_spans())
    assert named["event blob"].attributes["aml_trigger.outcome"] == "accepted"


def test_log_lines_of_an_event_carry_run_trigger_key_and_trace(spans, logging_service, records):
    response = _post({"reason": "logged"}, key="log-me-1")
    run_id = json.loads(response.get_body())["run_id"]
    ours = [r for r in records if r.name.startswith("aml_trigger.")]
    assert {r.getMessage() for r in ours} >= {"starting the pipeline"}
    root = _by_name(spans.get_finished_spans())["event http"]
    for record in ours:
        assert (record.run_id, record.trigger, record.idempotency_key) == (
            run_id,
            "http",
            "http:log-me-1",
        )
        assert record.trace_id == format(root.context.trace_id, "032x")
    line = json.loads(telemetry.JsonFormatter().format(ours[0]))
    assert line["run_id"] == run_id and line["trigger"] == "http"
    assert line["idempotency_key"] == "http:log-me-1" and line["logger"] == ours[0].name
    assert {"time", "level", "message", "trace_id", "span_id"} <= set(line)
    # After the event nothing is left behind for the next one on this thread, nor
    # after a direct service call (the CLI's `submit`) outside any event.
    from pipeline.request import TrainingRequest

    logging_service.submit_request(TrainingRequest(), trigger="cli", idempotency_key="cli:x")
    logging.getLogger("aml_trigger.test").info("between events")
    assert not hasattr(records[-1], "run_id") and not hasattr(records[-1], "trigger")


def test_blob_and_timer_log_lines_name_their_run(spans, installed, put, landed, records):
    put("drops/t/part-0.csv")
    entry.blob(landed("drops/t/_SUCCESS", b""))
    blob_lines = [r for r in records if r.name == "aml_trigger" and "blob" in r.getMessage()]
    assert blob_lines and blob_lines[-1].trigger == "blob"
    assert blob_lines[-1].run_id.startswith("run-")
    assert blob_lines[-1].idempotency_key.startswith("blob:incoming/drops/t/@")
    from azure.functions.timer import TimerRequest

    entry.timer("scheduled_retrain", TimerRequest(past_due=False))
    timer_line = [r for r in records if r.getMessage().startswith("timer ")][-1]
    assert timer_line.trigger == "timer"
    assert timer_line.idempotency_key.startswith("timer:scheduled_retrain@")


def test_monitor_lines_about_a_run_name_it(spans, installed, fake_submitter, records):
    closed = _free_port()  # nothing listens: the callback fails
    response = _post({"callback_url": f"http://127.0.0.1:{closed}/cb?sig=S1"}, key="mon-1")
    run_id = json.loads(response.get_body())["run_id"]
    fake_submitter.finish(run_id, "completed")
    entry.run_event(_run_status_changed(run_id, "Completed"))
    failed = [r for r in records if r.getMessage().startswith(f"callback for run {run_id}")]
    assert failed and (failed[0].run_id, failed[0].idempotency_key) == (run_id, "http:mon-1")
    assert failed[0].trigger == "http"


def _run_status_changed(run_id: str, status: str) -> func.EventGridEvent:
    return func.EventGridEvent(
        id=uuid.uuid4().hex, topic="/subscriptions/s/workspaces/w",
        subject=f"experiments/e/runs/{run_id}",
        event_type="Microsoft.MachineLearningServices.RunStatusChanged", event_time=None,
        data={"experimentName": "aml-trigger", "runId": run_id, "runStatus": status},
        data_version="",
    )  # fmt: skip


def test_text_format_appends_ids_and_log_format_is_checked():
    record = logging.LogRecord("aml_trigger.x", logging.INFO, __file__, 1, "hello %s", ("y",), None)
    record.run_id, record.trigger = "run-1", "http"
    assert (
        telemetry.TextFormatter()
        .format(record)
        .endswith("aml_trigger.x: hello y [run_id=run-1 trigger=http]")
    )
    with pytest.raises(telemetry.TelemetryError, match="LOG_FORMAT must be 'json' or 'text'"):
        telemetry.configure_logging({"LOG_FORMAT": "yaml"})
    with pytest.raises(telemetry.TelemetryError, match="OTEL_TRACES_EXPORTER must be"):
        telemetry._configure({"OTEL_TRACES_EXPORTER": "jaeger"})


def test_serve_refuses_a_bad_log_format(home, monkeypatch, capsys):
    from cli.main import main

    monkeypatch.setenv("LOG_FORMAT", "xml")
    assert main(["serve", "--port", "0"]) == 2
    assert "LOG_FORMAT must be 'json' or 'text' (got 'xml')" in capsys.readouterr().err


def test_redaction_of_urls_keys_and_connection_strings():
    text = telemetry.redact(
        "POST https://prod.logic.azure.com/workflows/x/run?api-version=1&sig=abc123 failed; "
        "conn DefaultEndpointsProtocol=https;AccountName=a;AccountKey=S3cr3t==;"
        " header x-functions-key: k1 and /api/runs?code=k2, Authorization: Bearer t0k3n;"
        " status code: 502 (Idempotency-Key order-42)"
    )
    for secret in ("abc123", "S3cr3t", "k1", "k2", "t0k3n"):
        assert secret not in text
    assert text.endswith("status code: 502 (Idempotency-Key order-42)")  # not secrets
    assert "https://prod.logic.azure.com/workflows/x/run?<redacted>" in text
    assert "AccountName=a" in text  # only the secret part goes


def test_a_logged_callback_url_loses_its_query_in_every_handler(records):
    telemetry.install_log_context()
    logging.getLogger("aml_trigger.notify").warning(
        "callback %s failed", "https://hooks.example/cb?sig=TOPSECRET"
    )
    assert records[-1].getMessage() == "callback https://hooks.example/cb?<redacted> failed"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sdk_http_debug():
    """azure-core's request logging turned up to DEBUG, as a developer debugging would
    (the app keeps it at WARNING), then put back."""
    telemetry.install_log_context()
    logger = logging.getLogger(telemetry.SDK_HTTP_LOGGER)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    yield
    logger.setLevel(previous)


@pytest.mark.azurite
def test_no_secret_in_any_log_line_after_a_full_cycle(
    azurite, home, fake_submitter, records, spans, monkeypatch, sdk_http_debug
):
    """Function key, storage account key and the callback's SAS never reach a log
    line (any logger, DEBUG: azure-core's HTTP logs included) or a span."""
    import function_app
    from pipeline.blob_storage import BlobStorage
    from pipeline.settings import Settings
    from triggers.host.blob_watcher import BlobWatcher
    from triggers.host.functions import index_app
    from triggers.host.local_host import LocalHost, app_settings
    from triggers.notify import CallbackNotifier

    sas = "sig=SAS" + uuid.uuid4().hex
    delivered: list[str] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            delivered.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    container = f"in-{uuid.uuid4().hex[:12]}"
    env = {
        "AML_TRIGGER_HOME": str(home),
        "AzureWebJobsStorage": azurite,
        "INCOMING_CONTAINER": container,
        "AML_TRIGGER_FUNCTION_KEY": KEY,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env(env)
    service = runtime.build_service(settings, submitter=fake_submitter)
    service.notifier = CallbackNotifier(local=True, sleep=lambda s: None)
    host = LocalHost(function_app.app, settings, port=_free_port(), environ=env,
                     watch_blobs=False, run_timers=False)  # fmt: skip
    host.start(service=service)
    try:
        callback = f"http://127.0.0.1:{hook.server_address[1]}/hook?api-version=1&{sas}"
        posted = requests.post(
            f"{host.url}/api/runs",
            json={"reason": "cycle", "callback_url": callback},
            headers={"x-functions-key": KEY, "Idempotency-Key": "cycle-1"},
            timeout=10,
        )
        assert posted.status_code == 202, posted.text
        run_id = posted.json()["run_id"]
        got = requests.get(f"{host.url}/api/runs/{run_id}", params={"code": KEY}, timeout=10)
        assert got.status_code == 200
        assert requests.get(f"{host.url}/api/runs?code=wrong-{KEY}", timeout=10).status_code == 401
        storage = BlobStorage.from_connection_string(azurite)
        storage.put_blob(container, "drops/c/part-0.csv", b"a,b\n1,2\n")
        storage.put_blob(container, "drops/c/_SUCCESS", b"")
        watcher = BlobWatcher(index_app(function_app.app, app_settings(settings, env)).blobs,
                              storage, home / "host")  # fmt: skip
        assert watcher.scan().fired
        watcher.close()
        fake_submitter.finish(run_id, "completed")
        entry.safety_net()
    finally:
        host.stop()
        runtime.reset()
        hook.shutdown()
    assert len(fake_submitter.submissions) == 2 and delivered == [f"/hook?api-version=1&{sas}"]

    out = io.StringIO()
    formatter = telemetry.JsonFormatter()
    for record in records:
        out.write(formatter.format(record) + "\n")
        out.write(json.dumps(vars(record), default=str) + "\n")  # every attribute too
    for span in spans.get_finished_spans():
        out.write(span.to_json() + "\n")
    text = out.getvalue()
    assert any(r.name.startswith("azure.") for r in records)  # storage traffic was logged
    assert run_id in text and "cycle-1" in text  # the ids are there...
    account_key = azurite.split("AccountKey=")[1].split(";")[0]
    for secret in (KEY, account_key, account_key[:20], sas):
        assert secret not in text  # ...the secrets are not


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    ours = ("APPLICATIONINSIGHTS", "OTEL_", "PYTHON_APPLICATIONINSIGHTS", "LOG_FORMAT")
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    run_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=run_env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


# Blocks every connection and name lookup before anything runs, recording which
# thread tried: configuring must not wait on the network (exporters and the live
# metrics ping run on their own threads).
_NO_NETWORK = """
import socket, threading
attempts = []
def _blocked(*args, **kwargs):
    attempts.append(threading.current_thread().name)
    raise OSError("network blocked by the test")
socket.socket.connect = lambda self, address: _blocked(self, address)
socket.getaddrinfo = _blocked
"""


def test_app_insights_configures_without_network_and_survives_an_unreachable_endpoint(
    tmp_path,
):
    code = _NO_NETWORK + (
        "import logging, function_app, sys\n"
        "from triggers import entry, telemetry\n"
        "import azure.functions as func\n"
        "assert 'azure.monitor.opentelemetry' not in sys.modules\n"
        "mode = telemetry.setup()\n"
        "at_configure = [name for name in attempts if name == 'MainThread']\n"
        "health = func.HttpRequest('GET', 'http://x/api/health', body=b'')\n"
        "response = entry.http('health', health)\n"
        "logging.getLogger('aml_trigger').warning('after the event')\n"
        "from opentelemetry import trace\n"
        "trace.get_tracer_provider().force_flush(10000)\n"
        "print(mode, at_configure, response.status_code, bool(attempts))\n"
    )
    connection = (
        "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
        "IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/;"
        "LiveEndpoint=https://westeurope.livediagnostics.monitor.azure.com/"
    )
    done = _python(code, {"APPLICATIONINSIGHTS_CONNECTION_STRING": connection,
                          "TMPDIR": str(tmp_path)})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    # Configured without touching the network on the caller's thread, the event
    # answered, and the exporters did try to send (and failed quietly) afterwards.
    assert done.stdout.split() == ["azure-monitor", "[]", "200", "True"]


def test_the_worker_own_azure_monitor_setup_is_not_repeated():
    done = _python(
        "from triggers import telemetry\n"
        "from opentelemetry import trace\n"
        "print(telemetry.setup(), type(trace.get_tracer_provider()).__name__)\n",
        {"PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true",
         "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["functions-worker", "ProxyTracerProvider"]


def test_console_exporter_prints_the_event_spans_and_importing_the_app_stays_light():
    code = (
        "import sys, time\n"
        "t = time.perf_counter(); import function_app; took = time.perf_counter() - t\n"
        "assert not [m for m in sys.modules if m.startswith(('opentelemetry', 'azure.monitor'))]\n"
        "from triggers import entry\n"
        "import azure.functions as func\n"
        "entry.http('health', func.HttpRequest('GET', 'http://x/api/health', body=b''))\n"
        "assert 'azure.monitor.opentelemetry' not in sys.modules\n"
        "print(f'import function_app: {took:.3f} s', file=sys.stderr)\n"
    )
    done = _python(code, {"OTEL_TRACES_EXPORTER": "console"})
    assert done.returncode == 0, done.stderr
    span = json.loads(done.stdout)
    assert span["name"] == "event http" and span["attributes"]["aml_trigger.function"] == "health"
    print(done.stderr.strip())  # a figure, not an assertion


@pytest.fixture
def azure_sdk_tracing():
    """What the Azure Monitor distro turns on in the Functions worker: azure-core's
    OpenTelemetry plugin and the requests/urllib3 HTTP instrumentations (exporting
    here to the in-memory exporter)."""
    from azure.core.settings import settings
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor

    settings.tracing_implementation = "opentelemetry"
    instrumentors = [RequestsInstrumentor(), URLLib3Instrumentor()]
    for instrumentor in instrumentors:
        instrumentor.instrument()
    yield
    for instrumentor in instrumentors:
        instrumentor.uninstrument()
    settings.tracing_implementation.unset_value()


@pytest.mark.azurite
def test_a_post_is_its_own_spans_and_lines_and_an_idle_period_exports_nothing(
    azurite, home, fake_submitter, spans, records, azure_sdk_tracing
):
    from opentelemetry.trace import SpanKind

    from pipeline.blob_storage import BlobStorage, blob_service_client
    from pipeline.settings import Settings
    from triggers.drops import DropBook
    from triggers.ledger import RunLedger
    from triggers.notify import CallbackNotifier
    from triggers.service import TriggerService
    from triggers.state import BlobState

    container = f"in-{uuid.uuid4().hex[:12]}"
    env = {"AML_TRIGGER_HOME": str(home), "AzureWebJobsStorage": azurite,
           "INCOMING_CONTAINER": container}  # fmt: skip
    # The ledger in the account, in a container of its own (the emulator is shared).
    state = BlobState(blob_service_client(azurite), container=f"state-{uuid.uuid4().hex[:12]}")
    service = TriggerService(
        Settings.from_env(env), fake_submitter, RunLedger(state), DropBook(state),
        BlobStorage(blob_service_client(azurite)), CallbackNotifier(local=True),
    )  # fmt: skip
    runtime.install(service)
    try:
        # The instrumentation is live: an SDK call outside the state store is traced.
        BlobStorage(blob_service_client(azurite)).get_blob(container, "absent.csv")
        control = spans.get_finished_spans()
        assert any(s.kind == SpanKind.CLIENT for s in control)
        spans.clear()
        records.clear()

        response = _post({"reason": "counted"}, key="count-1")
        assert response.status_code == 202
        per_post = spans.get_finished_spans()
        # One trace, the app's own spans only: the ledger's several round trips to
        # the account are housekeeping, not dependencies.
        assert sorted(s.name for s in per_post) == sorted(
            ["event http", "validate", "ledger claim", "policy admit", "submit"]
        )
        assert {s.instrumentation_scope.name for s in per_post} == {telemetry.TRACER}
        # One log line (the submission), none from azure-core's per-request logging.
        lines = [r for r in records if r.levelno >= logging.INFO]
        run_id = json.loads(response.get_body())["run_id"]
        assert [(r.name, r.getMessage()) for r in lines] == [
            ("aml_trigger.service", f"run {run_id} submitted (local backend, queued)")
        ]
        assert not any(r.name == telemetry.SDK_HTTP_LOGGER for r in records)

        # An idle hour: 12 safety-net ticks with nothing to do (no timer runs oftener).
        spans.clear()
        records.clear()
        for _ in range(12):
            entry.safety_net()
        assert spans.get_finished_spans() == ()
        assert [r.getMessage() for r in records if r.levelno >= logging.INFO] == []
    finally:
        runtime.reset()
