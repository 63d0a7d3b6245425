"""The Azure Functions app (Python v2 model): a table of contents.

Each function hands the host's binding value to `triggers/` in a line or two.
Importing this module must stay cheap and must not fail on settings: it loads
azure.functions, the blob SDK-type extension (azure-storage-blob, azure-identity:
the worker reads the annotation at indexing, so it cannot load later) and
triggers.entry; the service is built on the first event.
"""

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob

from triggers import entry
from triggers.queues import DROP_QUEUE

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


# --- HTTP API (/api/...) -----------------------------------------------------------------
@app.route(route="runs", methods=["POST"])
def submit_run(req: func.HttpRequest) -> func.HttpResponse:
    return entry.http("submit_run", req)


@app.route(route="verifications", methods=["POST"])
def submit_verification(req: func.HttpRequest) -> func.HttpResponse:
    return entry.http("submit_verification", req)


@app.route(route="runs", methods=["GET"])
def list_runs(req: func.HttpRequest) -> func.HttpResponse:
    return entry.http("list_runs", req)


@app.route(route="runs/{run_id}", methods=["GET"])
def get_run(req: func.HttpRequest) -> func.HttpResponse:
    return entry.http("get_run", req)


# Logic Apps' HTTP action polls this (the Location of a 202) until it answers 200.
@app.route(route="runs/{run_id}/status", methods=["GET"])
def run_status(req: func.HttpRequest) -> func.HttpResponse:
    return entry.http("run_status", req)


@app.route(route="runs/{run_id}/cancel", methods=["POST"])
def cancel_run(req: func.HttpRequest) -> func.HttpResponse:
    return entry.http("cancel_run", req)


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    return entry.http("health", req)


@app.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    return entry.http("openapi", req)


# --- events --------------------------------------------------------------------------------
# use_monitor: after downtime a missed tick runs once, with past_due=True.
@app.timer_trigger(schedule="%TRAIN_SCHEDULE%", arg_name="timer", use_monitor=True)
def scheduled_retrain(timer: func.TimerRequest) -> None:
    entry.timer("scheduled_retrain", timer)


# A BlobClient (an SDK type) makes the binding deferred: the host sends the worker a
# reference (connection, container, name), never the blob's bytes, which an InputStream
# would pull through gRPC on every trigger. Flex Consumption has only the Event Grid
# source (docs/infra.md); the local host watches the container whatever the source.
@app.blob_trigger(
    arg_name="client",
    path="%INCOMING_CONTAINER%/{name}",
    connection="AzureWebJobsStorage",
    source=func.BlobSource.EVENT_GRID,
)
def incoming_blob(client: blob.BlobClient) -> None:
    entry.blob(client)


# Closes a drop's quiet window: each drop's delayed message (BLOB_QUIET_SECONDS) lands
# here; it starts the drop's run or waits again, never past BLOB_MAX_DELAY_SECONDS.
@app.queue_trigger(arg_name="message", queue_name=DROP_QUEUE, connection="AzureWebJobsStorage")
def drop_window(message: func.QueueMessage) -> None:
    entry.drop_window(message)


# Azure ML's RunCompleted / RunStatusChanged (Event Grid, infra/ subscribes it): sends
# the callback, records the end in the ledger and starts queued runs.
@app.event_grid_trigger(arg_name="event")
def run_ended(event: func.EventGridEvent) -> None:
    entry.run_event(event)


# --- recovery ------------------------------------------------------------------------------
# Every 5 minutes: starts drops and settles runs whose event was lost, resubmits lost claims.
@app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer", use_monitor=False)
def safety_net(timer: func.TimerRequest) -> None:
    entry.safety_net()
