"""deploy re-reads the champion right before its traffic shift: a version a rival
outranked after register reported it promoted (docs/azure.md, the race) gets no
traffic, its new deployment is stopped, and the step is skipped, not failed."""

from __future__ import annotations

import json
import urllib.request

import mlflow
import pytest

from steps import deploy
from steps.champion import PROMOTION_TAG, REVOKED_TAG, current_champion
from steps.local_endpoint import current, stop_all, stop_deployment
from steps.register import register
from steps.smoke_test import sample_rows

from .conftest import mlflow_env, use_env

pytestmark = pytest.mark.slow  # trained model fixture, real scoring servers

MODEL, ENDPOINT = "dg-model", "dg-ep"
LINEAGE = {"data_location": "drops/d1/", "trigger": "blob", "run_key": "k", "code_version": "c"}


def _evaluation(champion: str | None) -> dict:
    return {
        "decision": "promote",
        "champion_version": champion,
        "metrics": {"auc": 0.7, "normalized_gini": 0.4, "log_loss": 0.15, "pr_auc": 0.08},
        "reasons": ["candidate auc 0.7000 meets the floor 0.6000 (gate_min_score)."],
    }


@pytest.fixture
def endpoint_home(session_home, tmp_path, monkeypatch):
    use_env(monkeypatch, mlflow_env(session_home))
    home = tmp_path / "home"  # endpoints of this test alone; the registry is the session's
    monkeypatch.setenv("AML_TRIGGER_HOME", str(home))
    yield home
    stop_all(home)


def _promote(client, train: dict, folder) -> dict:
    summary = register(client, model_name=MODEL, train=train,
                       evaluation=_evaluation(current_champion(client, MODEL)),
                       lineage=LINEAGE)  # fmt: skip
    assert summary["promoted"], summary
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary))
    return summary


def _deploy(registration, prepared, out) -> int:
    return deploy.main(["--registration", str(registration), "--prepared", str(prepared),
                        "--target", "local", "--endpoint-name", ENDPOINT,
                        "--out", str(out)])  # fmt: skip


def _score(uri: str, rows: list[dict]) -> dict:
    request = urllib.request.Request(
        uri, data=json.dumps({"data": rows}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.loads(response.read())


def test_a_rival_promoted_before_the_shift_keeps_the_old_deployment_serving(
    endpoint_home, trained, prepared, tmp_path, capsys
):
    from steps.tracking import configure_registry

    configure_registry()
    client = mlflow.MlflowClient()
    train = json.loads((trained / "summary.json").read_text())
    first = _promote(client, train, tmp_path / "reg1")
    assert _deploy(tmp_path / "reg1", prepared, tmp_path / "dep1") == 0
    serving = current(endpoint_home, ENDPOINT)
    assert serving["model_version"] == first["model_version"] and serving["alive"]

    ours = _promote(client, train, tmp_path / "reg2")  # register said "promoted"
    # The rival run: it wrote the same promotion number on a higher version, which
    # outranks ours (ties go to the higher version) after our re-read.
    rival = client.create_model_version(MODEL, source=client.get_model_version_download_uri(
        MODEL, ours["model_version"]))  # fmt: skip
    number = client.get_model_version(MODEL, ours["model_version"]).tags[PROMOTION_TAG]
    client.set_model_version_tag(MODEL, rival.version, PROMOTION_TAG, number)
    assert current_champion(client, MODEL) == str(rival.version)
    capsys.readouterr()

    assert _deploy(tmp_path / "reg2", prepared, tmp_path / "dep2") == 0  # skipped, not failed

    summary = json.loads((tmp_path / "dep2" / "summary.json").read_text())
    assert summary["superseded_by"] == str(rival.version)
    reason = summary["skipped_reason"]
    assert f"v{ours['model_version']} is no longer the champion" in reason
    assert f"v{rival.version} is the champion now" in reason
    assert f"the old deployment blue (model v{first['model_version']}) keeps serving" in reason
    assert summary["deployment"] is None and summary["scoring_uri"] is None
    assert "deploy: skipped:" in capsys.readouterr().err
    live = current(endpoint_home, ENDPOINT)
    assert live["deployment"] == "blue" and live["alive"]  # traffic never moved
    rows = sample_rows(prepared, 5)
    assert _score(live["scoring_uri"], rows)["model_version"] == first["model_version"]
    started = json.loads((endpoint_home / "endpoints" / ENDPOINT / "green" / "deployment.json")
                         .read_text())  # fmt: skip
    assert started["model_version"] == ours["model_version"]  # it did start and pass smoke
    assert not stop_deployment(started)  # ...and was stopped: not running any more
    tags = client.get_model_version(MODEL, ours["model_version"]).tags
    assert tags["deploy"] == "superseded" and REVOKED_TAG in tags
    assert current_champion(client, MODEL) == str(rival.version)  # the rival's, untouched
