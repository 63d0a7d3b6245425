"""Bring-your-own-model verification, end to end on this machine: POST-shaped bodies
through the trigger service, the verify pipeline in detached workers (test endpoint,
HTTP scoring, teardown, the ChampionGate), the callback on the terminal state. The
champion (its registry tags and its live local endpoint) is untouched throughout."""

from __future__ import annotations

import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import requests

from pipeline.local_submitter import LocalSubmitter
from pipeline.request import TrainingRequest
from pipeline.settings import Settings
from triggers.events import HttpSubmission
from triggers.validation import RequestError

CONSTANT_SCRIPT = """
import json
def init():
    pass
def run(raw):
    return {"probabilities": [0.5] * len(json.loads(raw)["data"])}
"""
BROKEN_SCRIPT = """
def init():
    raise RuntimeError("weights file is corrupt")
def run(raw):
    return {}
"""


class Callbacks(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 - the http.server API
        length = int(self.headers.get("Content-Length", 0))
        Callbacks.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def callback_url():
    server = HTTPServer(("127.0.0.1", 0), Callbacks)
    Callbacks.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def _wait(service, run_id: str, timeout: float = 600.0):
    """Poll like the host does: the monitor's tick starts queued runs (the concurrency
    limit queues the later submissions) and delivers callbacks."""
    from triggers.monitor import RunMonitor

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        RunMonitor(service).tick()
        record = service.get_run(run_id)
        if record.terminal:
            return record
        time.sleep(1.0)
    raise AssertionError(f"{run_id} did not finish: {service.get_run(run_id)}")


def _submit(service, body: dict):
    raw = json.dumps(body).encode()
    return service.submit_verification(
        HttpSubmission(body=raw, idempotency_key=None, content_type="application/json")
    )


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a training run, then three verifications, on 2 shared cores
def test_a_good_model_passes_a_bad_one_is_rejected_a_broken_one_fails_champion_untouched(
    home, tmp_path, callback_url
):
    import mlflow

    from steps.local_endpoint import current, stop_all
    from steps.sample_data import write_sample_data
    from triggers.monitor import RunMonitor
    from triggers.runtime import build_service

    settings = Settings.from_env()
    storage = home / "storage" / settings.incoming_container
    write_sample_data(tmp_path / "train", rows=8_000, seed=7, parts=2)
    write_sample_data(storage / "verify" / "d1", rows=3_000, seed=5, parts=1)
    try:
        champion_run = LocalSubmitter(settings).run_foreground(
            TrainingRequest(
                params={"num_boost_round": 40, "num_threads": 2},
                gate={"gate_min_score": 0.5},
            ),
            run_id="champion-run",
            data_dir=tmp_path / "train",
        )
        assert champion_run.status == "completed", champion_run.error
        live_before = current(home, "porto-seguro")
        assert live_before and live_before["alive"]

        # The submissions: the champion's own MLflow folder, a constant, a broken script.
        model_out = home / "runs" / "champion-run" / "outputs" / "train" / "model" / "model"
        shutil.copytree(model_out, storage / "byo" / "good")
        for name, script in (("constant", CONSTANT_SCRIPT), ("broken", BROKEN_SCRIPT)):
            folder = storage / "byo" / name
            folder.mkdir(parents=True)
            (folder / "score.py").write_text(script)
            (folder / "model.bin").write_bytes(b"\x00weights")
            (folder / "requirements.txt").write_text("numpy>=1.20\n")

        service = build_service(settings)
        common = {"data": "verify/d1", "callback_url": callback_url, "tags": {"originator": "ann"}}
        runs = {}
        for name in ("good", "constant", "broken"):
            outcome = _submit(service, {"model": f"byo/{name}", **common})
            assert outcome.created
            runs[name] = outcome.run.run_id
        # A repeat is the same run, not a second one (the ledger's idempotency).
        assert _submit(service, {"model": "byo/good", **common}).run.run_id == runs["good"]

        good, constant, broken = (_wait(service, runs[n]) for n in ("good", "constant", "broken"))
        assert good.status == "completed", good.error
        assert good.gate["decision"] == "promote"
        assert good.gate["champion_version"] == "1"
        assert good.metrics["auc"] > 0.6
        assert good.extra["summaries"]["verify_endpoint"]["torn_down"] is True

        assert constant.status == "completed", constant.error
        assert constant.gate["decision"] == "reject"
        assert any("below the floor 0.6000" in r for r in constant.gate["reasons"])
        assert constant.metrics["auc"] == pytest.approx(0.5)

        assert broken.status == "failed"
        assert "init() failed" in broken.error and "weights file is corrupt" in broken.error
        assert "the champion's endpoint was not touched" in broken.error

        # The originator hears about each ending, as for a training run.
        RunMonitor(service).tick()
        by_run = {c["run_id"]: c for c in Callbacks.received}
        assert by_run[runs["good"]]["gate_decision"] == "promote"
        assert by_run[runs["constant"]]["gate_decision"] == "reject"
        assert by_run[runs["broken"]]["status"] == "failed"

        # The champion: the same version, the same live server, serving.
        from steps.champion import current_champion
        from steps.tracking import configure_registry

        configure_registry()
        client = mlflow.MlflowClient()
        assert current_champion(client, "porto-seguro-lgbm") == "1"
        assert len(client.search_model_versions("name='porto-seguro-lgbm'")) == 1
        live_after = current(home, "porto-seguro")
        assert live_after["pid"] == live_before["pid"] and live_after["alive"]
        assert requests.get(live_after["scoring_uri"].rsplit("/", 1)[0] + "/", timeout=10).ok
    finally:
        stop_all(home)


def test_bad_verification_bodies_name_every_field(home):
    from triggers.runtime import build_service

    service = build_service(Settings.from_env())
    with pytest.raises(RequestError) as caught:
        _submit(service, {"data": "https://elsewhere/x", "gate": {"gate_min_score": 2}})
    paths = {d["path"] for d in caught.value.details}
    assert caught.value.status == 422
    assert paths == {"model", "data", "gate.gate_min_score"}
    with pytest.raises(RequestError) as caught:
        _submit(service, {"model": "m/", "data": "d/", "kind": "train"})
    assert {d["path"] for d in caught.value.details} == {"kind"}


def test_a_dry_run_shows_the_verify_pipeline_commands(home):
    from triggers.runtime import build_service

    service = build_service(Settings.from_env())
    outcome = _submit(service, {"model": "byo/m1", "data": "verify/d1", "dry_run": True})
    description = outcome.description
    assert description["pipeline"] == "aml_trigger_verify_model"
    assert [s["name"] for s in description["steps"]] == ["verify_endpoint", "evaluate"]
    command = description["steps"][0]["command"]
    assert command[1:3] == ["-m", "steps.verify_endpoint"]
    assert str(home / "storage" / "incoming" / "byo" / "m1") in command


def test_the_verify_pipeline_loads_with_the_azure_ml_sdk_and_takes_the_request_inputs():
    from azure.ai.ml import load_component

    from pipeline.verification import VERIFY_PIPELINE_YAML, VerificationRequest

    pipeline = load_component(source=VERIFY_PIPELINE_YAML)
    assert pipeline.name == "aml_trigger_verify_model"
    assert list(pipeline.jobs) == ["verify_endpoint", "evaluate"]
    for name in ("verify_endpoint", "verify_gate"):
        component = load_component(
            source=VERIFY_PIPELINE_YAML.parent / "components" / f"{name}.yaml"
        )
        assert component.name == f"aml_trigger_{name}"
    request = VerificationRequest(model="m/", data="d/")
    assert set(pipeline.inputs) == set(request.pipeline_inputs(data_uri="x", model_uri="y")) | {
        "model_uri"  # given only to a managed endpoint (pipeline/aml_verification.py)
    }
    managed = request.pipeline_inputs(data_uri="x", model_uri="y", endpoint="managed")
    assert set(pipeline.inputs) == set(managed)
