"""`aml-trigger submit`, and one run through the real LocalSubmitter."""

from __future__ import annotations

import json
import time

import function_app
from cli.main import main
from pipeline.run_events import events_dir
from pipeline.settings import Settings
from triggers import runtime
from triggers.events import HttpSubmission
from triggers.host.event_grid import EventGridRunner
from triggers.host.functions import index_app
from triggers.host.local_host import app_settings
from triggers.service import Accepted


def test_submit_prints_the_run_and_a_repeated_key_returns_it(installed, fake_submitter, capsys):
    args = ["submit", "--data", "drops/a/", "--param", "num_leaves=8", "--idempotency-key", "k1"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["request"]["params"]["num_leaves"] == 8 and first["trigger"] == "cli"
    assert main(args) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["run_id"] == first["run_id"]
    assert "existing run" in captured.err
    assert fake_submitter.submissions == [first["run_id"]]


def test_submit_dry_run_submits_nothing(installed, fake_submitter, capsys):
    assert main(["submit", "--dry-run", "--deploy", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["dry_run"] is True
    assert fake_submitter.calls == 0


def test_submit_names_the_bad_value(installed, fake_submitter, capsys):
    assert main(["submit", "--data", "../etc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 1 invalid field(s): data") and "'..'" in err
    assert main(["submit", "--param", "num_leaves=lots"]) == 2
    assert "num_leaves=lots: expected an integer" in capsys.readouterr().err
    assert main(["submit", "--callback-url", "http://example.com/x"]) == 2
    assert "loopback" in capsys.readouterr().err
    assert fake_submitter.calls == 0


def test_one_http_run_through_the_real_local_submitter(home, put):
    """The seam with the real embedded backend: one run recorded, followed to its end.
    The data is too small to train on, so the run fails fast at prep; only the
    recording and the following matter here."""
    put("drops/tiny/part-0.csv", b"id,target,ps_ind_01\n1,0,3\n2,1,4\n")
    settings = Settings.from_env({"AML_TRIGGER_HOME": str(home)})
    service = runtime.build_service(settings)
    body = json.dumps({"data": "drops/tiny/", "deploy_target": "none"}).encode()
    outcome = service.submit_http(HttpSubmission(body=body, idempotency_key="real-1"))
    assert isinstance(outcome, Accepted) and outcome.created
    run_id = outcome.run.run_id
    again = service.submit_http(HttpSubmission(body=body, idempotency_key="real-1"))
    assert again.run.run_id == run_id and not again.created
    assert [r.run_id for r in service.submitter.list_runs()] == [run_id]

    # No monitor tick: the worker's end-of-run event, delivered as the local host
    # does, settles the run (pipeline/worker.py -> .local/events/ -> run_ended).
    index = index_app(function_app.app, app_settings(settings, {}))
    events = EventGridRunner(index.event_grid, events_dir(home))
    runtime.install(service)
    try:
        deadline = time.monotonic() + 90
        while service.ledger.open_entries() and time.monotonic() < deadline:
            events.deliver()
            time.sleep(0.3)
    finally:
        runtime.reset()
    record = service.get_run(run_id)
    assert record.terminal, record.status
    # The blob data reached the step: prep names the file it refused.
    assert record.status == "failed" and "part-0.csv" in (record.error or "")
    assert record.idempotency_key == "http:real-1" and record.trigger == "http"
    assert service.ledger.get("http:real-1").run_status == record.status
    assert service.ledger.open_entries() == []
