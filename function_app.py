"""The Azure Functions app (Python v2 model): a table of contents.

Each function hands the host's binding value to `triggers/` in a line or two.
Importing this module must stay cheap and must not fail on settings: it loads
only azure.functions and triggers.entry; the service is built on the first event.
"""

import azure.functions as func

from triggers import entry

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


# The function gets the blob's name and URI; triggers/ never reads its content.
@app.blob_trigger(
    arg_name="blob",
    path="%INCOMING_CONTAINER%/{name}",
    connection="AzureWebJobsStorage",
    source=entry.blob_source(),
)
def incoming_blob(blob: func.InputStream) -> None:
    entry.blob(blob)


# --- housekeeping --------------------------------------------------------------------------
# Starts the run of drop folders whose quiet window closed (no marker file).
@app.timer_trigger(schedule="*/10 * * * * *", arg_name="timer", use_monitor=False)
def sweep_drops(timer: func.TimerRequest) -> None:
    entry.sweep()


# Follows runs to their end, sends callbacks, starts queued and recovers lost claims.
@app.timer_trigger(schedule="*/30 * * * * *", arg_name="timer", use_monitor=False)
def monitor_runs(timer: func.TimerRequest) -> None:
    entry.monitor()
