"""The champion on model-version tags: the rule every reader applies, promotion as
check-write-re-read, rollback by revocation. On a real MLflow registry (SQLite)."""

from __future__ import annotations

import mlflow
import pytest

from steps.champion import (
    PROMOTION_TAG,
    REVOKED_TAG,
    Superseded,
    Tagged,
    champion_of,
    check_still_champion,
    current_champion,
    model_version_uri,
    next_promotion,
    promote,
    revoke,
    should_shift,
)


def test_the_highest_unrevoked_promotion_is_the_champion():
    versions = [
        Tagged("1", {PROMOTION_TAG: "1"}),
        Tagged("2", {"gate": "rejected"}),
        Tagged("3", {PROMOTION_TAG: "2"}),
        Tagged("4", {PROMOTION_TAG: "3", REVOKED_TAG: "deploy failed"}),
    ]
    assert champion_of(versions) == "3"
    assert next_promotion(versions) == 4  # a revoked number is never handed out again
    assert champion_of([]) is None and next_promotion([]) == 1
    # Two versions holding the same number (a race): one of them, the same for everyone.
    tied = [Tagged("5", {PROMOTION_TAG: "7"}), Tagged("6", {PROMOTION_TAG: "7"})]
    assert champion_of(tied) == champion_of(list(reversed(tied))) == "6"
    assert champion_of([Tagged("1", {PROMOTION_TAG: "x"})]) is None


@pytest.fixture
def client(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("m")
    for _ in range(3):
        client.create_model_version("m", source=str(tmp_path / "model"))
    return client


def test_promotion_is_compare_and_set_and_revocation_rolls_back(client):
    assert current_champion(client, "m") is None
    assert current_champion(client, "no-such-model") is None
    assert promote(client, "m", "1", expected=None) is None
    assert promote(client, "m", "2", expected="1") is None
    # Judged against v1, but v2 is the champion now: nothing is written.
    assert promote(client, "m", "3", expected="1") == "2"
    assert PROMOTION_TAG not in client.get_model_version("m", "3").tags
    assert revoke(client, "m", "2", "smoke test failed") == "1"
    assert current_champion(client, "m") == "1"
    assert promote(client, "m", "3", expected="1") is None
    assert client.get_model_version("m", "3").tags[PROMOTION_TAG] == "3"


class PromotesMeanwhile:
    """The real client; another run's promotion lands between our check and our write."""

    def __init__(self, real, rival: str) -> None:
        self.real, self.rival, self.done = real, rival, False

    def set_model_version_tag(self, name, version, key, value):
        if key == PROMOTION_TAG and not self.done:
            self.done = True
            self.real.set_model_version_tag(name, self.rival, PROMOTION_TAG, value)
        return self.real.set_model_version_tag(name, version, key, value)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_a_promotion_that_loses_a_race_revokes_itself(client):
    promote(client, "m", "1", expected=None)
    # Both runs judged against v1 and both take number 2; v3 outranks v2.
    racing = PromotesMeanwhile(client, rival="3")
    assert promote(racing, "m", "2", expected="1") == "3"
    assert REVOKED_TAG in client.get_model_version("m", "2").tags
    assert current_champion(client, "m") == "3"


def test_a_version_is_loaded_from_its_run_s_artifacts_not_through_runs_uri(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(experiment)
    client.create_registered_model("r")
    run_id = run.info.run_id
    client.create_model_version("r", source=f"runs:/{run_id}/model", run_id=run_id)
    located = model_version_uri(client, "r", "1")
    assert located == f"{run.info.artifact_uri}/model" and not located.startswith("runs:/")


def test_traffic_shifts_only_to_the_version_still_champion():
    assert should_shift("2", "2") and should_shift(2, "2")
    assert not should_shift("2", "3")  # a rival outranked it after register said "promoted"
    assert not should_shift("2", None)  # revoked meanwhile: nothing to serve it as
    with pytest.raises(Superseded) as caught:
        check_still_champion("2", lambda: "3")
    assert caught.value.champion == "3" and "v3 is the champion now" in str(caught.value)
    check_still_champion("3", lambda: "3")  # still champion: no exception
