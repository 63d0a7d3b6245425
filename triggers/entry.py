"""From the host's binding objects to typed events and the service (function_app's side).

Imported by function_app at indexing time, so it loads only the standard library
and azure.functions; the service and its dependencies load on the first event.
The blob function's argument is the BlobClient the host binds (function_app.py).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import azure.functions as func

from triggers import runtime
from triggers.events import BlobArrival, TimerTick

log = logging.getLogger("aml_trigger")

# A host may fire a tick a little before its second; it still belongs to that tick.
_EARLY_TICK = timedelta(seconds=5)


def http(handler_name: str, req: func.HttpRequest) -> func.HttpResponse:
    from triggers import http_api, telemetry

    telemetry.setup()
    # The function's name, never the URL: a key may ride in its query (`?code=`).
    with telemetry.event("http", req.headers, function=handler_name, method=req.method) as span:
        response = getattr(http_api, handler_name)(req)
        span.set_attribute("http.response.status_code", response.status_code)
        if response.status_code >= 500:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, f"HTTP {response.status_code}"))
        return response


def blob(client) -> None:
    """`client` is the BlobClient the host binds: a reference to the landed blob, never
    its bytes (azure.storage.blob.BlobClient in Azure and on Azurite; on folder storage
    pipeline.storage.FolderBlobClient). Its name comes with it; ETag and size cost one
    request (get_blob_properties, a HEAD), and the content is never downloaded."""
    from azure.core.exceptions import ResourceNotFoundError

    from triggers import telemetry

    container, name = client.container_name, client.blob_name
    telemetry.setup()
    with telemetry.event("blob", blob=f"{container}/{name}") as span:
        try:
            props = client.get_blob_properties()
        except ResourceNotFoundError:
            # Deleted before its event was handled (Event Grid delivers at least once,
            # possibly late): nothing to run, and retrying would only poison it.
            log.info("blob %s/%s: no longer exists, nothing to do", container, name)
            return
        span.set_attribute(telemetry.ATTR + "etag", str(props.etag))
        span.set_attribute(telemetry.ATTR + "size", props.size or 0)
        arrival = BlobArrival(
            container=container,
            name=name,
            etag=props.etag,
            size=props.size,
            uri=client.url.partition("?")[0],  # never a SAS token
        )
        outcome = runtime.service().on_blob(arrival)
        telemetry.record_outcome(outcome)
        log.info("blob %s/%s: %s", container, name, _describe(outcome))


def timer(function_name: str, request: func.TimerRequest, *, now: datetime | None = None) -> None:
    from triggers import telemetry
    from triggers.schedule import CronSchedule

    telemetry.setup()
    with telemetry.event("timer", function=function_name, past_due=bool(request.past_due)):
        service = runtime.service()
        schedule = CronSchedule.parse(service.settings.train_schedule)
        when = (now or datetime.now(UTC)) + _EARLY_TICK
        tick = TimerTick(
            function_name=function_name,
            scheduled_at=schedule.latest_at_or_before(when),
            past_due=bool(request.past_due),
            schedule_status=dict(getattr(request, "schedule_status", None) or {}),
        )
        outcome = service.on_timer(tick)
        telemetry.record_outcome(outcome)
        log.info(
            "timer %s (%s): %s", function_name, tick.scheduled_at.isoformat(), _describe(outcome)
        )


def drop_window(message: func.QueueMessage) -> None:
    """A drop's delayed message became visible (queue trigger on DROP_QUEUE)."""
    from triggers import decode, telemetry

    telemetry.setup()
    try:
        due = decode.drop_window(message.get_body())
    except decode.UndecodableEvent as exc:
        # Not ours: completing the call deletes it (retrying cannot make it readable).
        log.error("queue message %s dropped: %s", message.id, exc)
        return
    with telemetry.event("blob", drop=f"{due.container}/{due.folder}"):
        outcome = runtime.service().on_drop_window(due)
        telemetry.record_outcome(outcome)
        log.info("drop %s: %s", due.folder or "/", _describe(outcome))


def run_event(event: func.EventGridEvent) -> None:
    """Azure ML (or the local worker) says a run changed state (Event Grid trigger)."""
    from triggers import decode, telemetry
    from triggers.monitor import RunMonitor

    telemetry.setup()
    try:
        ended = decode.run_ended(event.event_type, event.get_json())
    except decode.UndecodableEvent as exc:
        log.error("event %s ignored: %s", event.id, exc)
        return
    if ended is None:
        return  # a state that is not an end: nothing to settle
    with telemetry.event("run-ended", run_id=ended.run_id, status=ended.status):
        report = RunMonitor(runtime.service()).run_ended(ended.run_id)
        if report.finished or report.started:
            log.info("run %s ended (%s): %s", ended.run_id, ended.status, report)


def safety_net() -> None:
    """Every 5 minutes: what an event would have done, if the event was lost.
    Starts drops whose window closed and follows every unfinished run."""
    from triggers import telemetry
    from triggers.monitor import RunMonitor

    telemetry.setup()
    service = runtime.service()
    # One event per drop that fires (each its own trace); a quiet sweep makes none.
    for outcome in service.sweep_drops():
        log.info("drop (safety net): %s", _describe(outcome))
    # No event span for the tick itself: submissions it makes are traced (`submit`)
    # and its log lines carry the run they are about.
    report = RunMonitor(service).tick()
    if report.finished or report.started or report.resubmitted:
        log.info("safety net: %s", report)


def _describe(outcome) -> str:
    run = getattr(outcome, "run", None)
    if run is not None:
        state = "new run" if outcome.created else "existing run"
        return f"{state} {run.run_id} ({run.status}){' ' + outcome.note if outcome.note else ''}"
    return getattr(outcome, "reason", None) or type(outcome).__name__
