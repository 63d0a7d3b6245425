"""The local blue/green endpoint: switch only after a passing smoke test, then stop the old."""

from __future__ import annotations

import json
import urllib.request

import pytest

from steps._cli import StepError
from steps.local_endpoint import current, deploy_local, stop_all
from steps.smoke_test import sample_rows

pytestmark = pytest.mark.slow  # starts real scoring servers

GARBAGE_SCRIPT = """
def init():
    pass


def run(raw):
    return {"probabilities": [7.5], "model_version": "broken"}
"""


@pytest.fixture
def endpoint_home(home):
    yield home
    stop_all(home)


def post(uri: str, rows: list[dict]) -> dict:
    request = urllib.request.Request(
        uri, data=json.dumps({"data": rows}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.loads(response.read())


def alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_blue_green_switch_then_a_garbage_deployment_leaves_green_serving(
    endpoint_home, trained, prepared, tmp_path
):
    rows = sample_rows(prepared, 10)
    common = dict(home=endpoint_home, endpoint_name="ep", model_name="porto",
                  model_source=trained / "model", sample_rows=rows)  # fmt: skip

    blue = deploy_local(model_version="1", **common)
    assert blue["deployment"] == "blue" and blue["smoke_test"]["passed"]
    assert post(blue["scoring_uri"], rows)["model_version"] == "1"

    green = deploy_local(model_version="2", **common)
    assert green["deployment"] == "green" and green["scoring_uri"] != blue["scoring_uri"]
    state = json.loads((endpoint_home / "endpoints" / "ep" / "state.json").read_text())
    assert state["live"]["deployment"] == "green" and state["previous"]["deployment"] == "blue"
    assert not alive(blue["pid"])  # stopped only after the switch
    assert post(green["scoring_uri"], rows)["model_version"] == "2"

    script = tmp_path / "garbage_score.py"
    script.write_text(GARBAGE_SCRIPT)
    with pytest.raises(StepError) as failure:
        deploy_local(model_version="3", entry_script=script, **common)
    message = str(failure.value)
    assert "new deployment blue (model v3) failed" in message and "probability 7.5" in message
    assert "the old deployment green (model v2) keeps serving" in message
    live = current(endpoint_home, "ep")
    assert live["deployment"] == "green" and live["alive"]
    assert post(live["scoring_uri"], rows)["model_version"] == "2"
    failed = json.loads(
        (endpoint_home / "endpoints" / "ep" / "blue" / "deployment.json").read_text()
    )
    assert not alive(failed["pid"])

    assert stop_all(endpoint_home) == ["ep/green"]
    assert current(endpoint_home, "ep")["alive"] is False


def test_a_port_taken_between_pick_and_bind_is_retried_on_another(
    endpoint_home, trained, prepared, monkeypatch
):
    import socket

    from steps import local_endpoint

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real_free_port = local_endpoint._free_port
    ports = iter([taken])
    monkeypatch.setattr(local_endpoint, "_free_port", lambda: next(ports, None) or real_free_port())
    try:
        info = deploy_local(home=endpoint_home, endpoint_name="ep", model_name="porto",
                            model_version="1", model_source=trained / "model",
                            sample_rows=sample_rows(prepared, 5))  # fmt: skip
    finally:
        squatter.close()
    assert info["port"] != taken and current(endpoint_home, "ep")["alive"]
    log = (endpoint_home / "endpoints" / "ep" / "blue" / "server.log").read_text()
    assert "Address already in use" in log or "Connection in use" in log
