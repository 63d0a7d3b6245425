"""register: lineage tags, no half-registered versions, compare-and-set on the champion."""

from __future__ import annotations

import json

import mlflow
import pytest

from steps import register as register_step
from steps._cli import StepError
from steps.champion import PROMOTION_TAG, REVOKED_TAG, current_champion
from steps.register import register, restore_champion

from .conftest import mlflow_env, use_env

pytestmark = pytest.mark.slow  # needs the trained model fixture

LINEAGE = {"data_location": "drops/d1/", "trigger": "blob", "run_key": "k1", "code_version": "abc"}


def evaluation(decision: str = "promote", champion: str | None = None) -> dict:
    return {
        "decision": decision,
        "champion_version": champion,
        "metrics": {"auc": 0.7, "normalized_gini": 0.4, "log_loss": 0.15, "pr_auc": 0.08},
        "reasons": ["candidate auc 0.7000 meets the floor 0.6000 (gate_min_score)."],
    }


@pytest.fixture
def client(session_home, monkeypatch):
    use_env(monkeypatch, mlflow_env(session_home))
    from steps.tracking import configure_registry

    configure_registry()
    return mlflow.MlflowClient()


@pytest.fixture
def train_summary(trained) -> dict:
    return json.loads((trained / "summary.json").read_text())


class TaggingBreaks:
    """The real client, except that tagging fails after a couple of tags."""

    def __init__(self, real, fail_after: int) -> None:
        self.real, self.fail_after, self.tags = real, fail_after, 0

    def set_model_version_tag(self, *args):
        self.tags += 1
        if self.tags > self.fail_after:
            raise RuntimeError("registry went away")
        return self.real.set_model_version_tag(*args)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_promoted_version_carries_lineage_and_becomes_champion(client, train_summary):
    summary = register(client, model_name="reg-lineage", train=train_summary,
                       evaluation=evaluation(), lineage=LINEAGE)  # fmt: skip
    assert summary["promoted"] and summary["model_version"] == "1"
    version = client.get_model_version("reg-lineage", "1")
    assert version.tags["data_location"] == "drops/d1/" and version.tags["run_key"] == "k1"
    assert version.tags["mlflow_run_id"] == train_summary["mlflow_run_id"]
    assert version.tags["gate"] == "promoted" and version.tags["test_auc"] == "0.700000"
    assert version.tags[PROMOTION_TAG] == "1"
    assert version.source.endswith("/model") and version.run_id == train_summary["mlflow_run_id"]
    assert current_champion(client, "reg-lineage") == "1"


def test_a_rejected_candidate_is_registered_but_never_promoted(client, train_summary):
    summary = register(client, model_name="reg-rejected", train=train_summary,
                       evaluation=evaluation("reject"), lineage=LINEAGE)  # fmt: skip
    assert not summary["promoted"]
    assert summary["reason"].startswith("rejected by the gate")
    assert client.get_model_version("reg-rejected", "1").tags["gate"] == "rejected"
    assert current_champion(client, "reg-rejected") is None


def test_the_champion_does_not_move_if_another_run_promoted_meanwhile(client, train_summary):
    first = register(client, model_name="reg-race", train=train_summary,
                     evaluation=evaluation(), lineage=LINEAGE)  # fmt: skip
    # This candidate was evaluated when there was no champion; v1 has been promoted since.
    late = register(client, model_name="reg-race", train=train_summary,
                    evaluation=evaluation(champion=None), lineage=LINEAGE)  # fmt: skip
    assert first["promoted"] and not late["promoted"]
    assert "champion is now v1" in late["reason"]
    assert current_champion(client, "reg-race") == "1"
    late_tags = client.get_model_version("reg-race", late["model_version"]).tags
    assert late_tags["gate"] == "superseded" and PROMOTION_TAG not in late_tags


def test_a_tagging_failure_deletes_the_new_version(client, train_summary):
    broken = TaggingBreaks(client, fail_after=2)
    with pytest.raises(StepError, match="tagging the new version failed .*registry went away"):
        register(broken, model_name="reg-broken", train=train_summary,
                 evaluation=evaluation(), lineage=LINEAGE)  # fmt: skip
    assert client.search_model_versions("name='reg-broken'") == []
    assert current_champion(client, "reg-broken") is None


def test_restore_champion_revokes_the_failed_promotion(client, train_summary):
    for _ in range(2):
        register(client, model_name="reg-restore", train=train_summary,
                 evaluation=evaluation(champion=current_champion(client, "reg-restore")),
                 lineage=LINEAGE)  # fmt: skip
    assert current_champion(client, "reg-restore") == "2"
    done = restore_champion(client, model_name="reg-restore", failed_version="2",
                            previous_version="1", reason="smoke test failed")  # fmt: skip
    assert "back on v1" in done and current_champion(client, "reg-restore") == "1"
    failed = client.get_model_version("reg-restore", "2").tags
    assert failed["deploy"] == "failed" and "smoke test failed" in failed[REVOKED_TAG]
    # The next promotion gets a number never used before, revoked ones included.
    third = register(client, model_name="reg-restore", train=train_summary,
                     evaluation=evaluation(champion="1"), lineage=LINEAGE)  # fmt: skip
    assert third["promoted"] and current_champion(client, "reg-restore") == "3"
    assert client.get_model_version("reg-restore", "3").tags[PROMOTION_TAG] == "3"


def test_restoring_with_no_previous_champion_leaves_none(client, train_summary):
    register(client, model_name="reg-first", train=train_summary,
             evaluation=evaluation(), lineage=LINEAGE)  # fmt: skip
    done = restore_champion(client, model_name="reg-first", failed_version="1",
                            previous_version=None, reason="endpoint refused")  # fmt: skip
    assert "withdrawn" in done and current_champion(client, "reg-first") is None


def test_cli_writes_the_contract_summary(session_home, trained, tmp_path, monkeypatch):
    use_env(monkeypatch, mlflow_env(session_home))
    evaluation_dir = tmp_path / "evaluation"
    evaluation_dir.mkdir()
    (evaluation_dir / "summary.json").write_text(json.dumps(evaluation()))
    args = ["--model", str(trained), "--evaluation", str(evaluation_dir), "--model-name",
            "reg-cli", "--data-location", "d/", "--trigger", "http", "--run-key", "r",
            "--code-version", "v", "--out", str(tmp_path / "out")]  # fmt: skip
    assert register_step.main(args) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["model_name"] == "reg-cli" and summary["model_version"] == "1"
    assert summary["promoted"] is True and "now the champion" in summary["reason"]
