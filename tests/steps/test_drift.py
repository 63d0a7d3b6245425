"""check_drift: PSI and the retraining policy with plain values, then the step on real
drops against a registered champion (an undrifted drop is skipped under on_drift with
its figures, a drifted one retrained), and the steps after it doing nothing on skip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from steps import deploy, drift, evaluate, prep, register, score_champion, train
from steps.drift import DriftFigures, decide, observed_shares, psi, reference_shares
from steps.params import RetrainPolicy
from steps.profile import _profile_column
from steps.sample_data import write_sample_data

from .conftest import mlflow_env, prep_args, use_env

ON_DRIFT = RetrainPolicy(retrain_policy="on_drift", drift_psi_threshold=0.2)


def figures(psi_values: dict[str, float], **overrides) -> DriftFigures:
    values = {
        "psi": psi_values, "target_psi": 0.001, "target_rate_old": 0.036,
        "target_rate_new": 0.037, "rows_old": 20_000, "rows_new": 5_000, "same_location": False,
    }  # fmt: skip
    values.update(overrides)
    return DriftFigures(**values)


# -- PSI --------------------------------------------------------------------------------


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    small = psi([0.5, 0.5], [0.55, 0.45])
    large = psi([0.5, 0.5], [0.8, 0.2])
    assert 0 < small < 0.05 < 0.2 < large
    # The textbook value: (0.8-0.5) ln(0.8/0.5) + (0.2-0.5) ln(0.2/0.5)
    assert large == pytest.approx(0.3 * np.log(1.6) + 0.3 * np.log(2.5))
    # An empty bin is floored, not infinite.
    assert np.isfinite(psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2]))
    with pytest.raises(ValueError, match="same bins"):
        psi([0.5, 0.5], [1.0])


def test_numeric_feature_is_binned_in_the_champions_edges_with_a_missing_bin():
    rng = np.random.default_rng(1)
    old = rng.normal(0, 1, 20_000)
    old[:2_000] = np.nan
    profile = _profile_column(old.astype("float32"), "numeric")
    expected = reference_shares(profile)
    assert expected[0] == pytest.approx(0.1) and sum(expected) == pytest.approx(1.0)

    same = rng.normal(0, 1, 10_000)
    same[:1_000] = np.nan
    shares = observed_shares(same, profile)
    assert len(shares) == len(expected) and sum(shares) == pytest.approx(1.0)
    assert psi(expected, shares) < 0.01

    shifted = rng.normal(1.0, 1, 10_000)  # a one-sigma shift, values beyond the old max too
    assert psi(expected, observed_shares(shifted, profile)) > 0.5


def test_categorical_feature_compares_labels_not_codes():
    old_codes = np.array([0] * 600 + [1] * 300 + [2] * 100, dtype="float32")  # a, b, c
    profile = _profile_column(old_codes, "categorical")
    profile["categories"] = ["a", "b", "c"]
    # The new drop has a new label first, so every code moved: same mix by label.
    new_codes = np.array([1] * 60 + [2] * 30 + [3] * 10, dtype="float64")
    shares = observed_shares(new_codes, profile, categories=["_new", "a", "b", "c"])
    assert psi(reference_shares(profile), shares) < 1e-9
    # Integer-coded categoricals (no labels) compare codes.
    plain = _profile_column(old_codes, "categorical")
    flipped = np.array([2] * 600 + [1] * 300 + [0] * 100, dtype="float64")
    assert psi(reference_shares(plain), observed_shares(flipped, plain)) > 1.0


# -- the policy ------------------------------------------------------------------------


def test_no_champion_always_retrains_and_says_why():
    for name in ("always", "on_drift", "min_new_rows"):
        decision = decide(RetrainPolicy(retrain_policy=name), None, champion_version=None)
        assert decision.decision == "retrain"
        assert decision.reason == "no champion yet: nothing to compare with, retraining"


def test_a_champion_without_a_training_profile_is_retrained_with_the_note():
    decision = decide(ON_DRIFT, None, champion_version="3", note="run r1 has no profile")
    assert decision.decision == "retrain"
    assert decision.reason == "cannot compare with champion v3 (run r1 has no profile); retraining"


def test_on_drift_skips_below_the_threshold_and_retrains_at_it():
    skip = decide(ON_DRIFT, figures({"a": 0.03, "b": 0.01}), champion_version="1")
    assert skip.skip and skip.reason == "no drift (max PSI 0.03 < 0.20)"
    at = decide(ON_DRIFT, figures({"a": 0.2, "b": 0.01}), champion_version="1")
    assert at.decision == "retrain" and at.reason == "drift (max PSI 0.20 on a >= 0.20)"
    close = decide(ON_DRIFT, figures({"a": 0.1996}), champion_version="1")
    assert close.skip and close.reason == "no drift (max PSI 0.1996 < 0.20)"
    target = decide(ON_DRIFT, figures({"a": 0.01}, target_psi=0.31), champion_version="1")
    assert target.decision == "retrain" and "on the target" in target.reason


def test_always_retrains_whatever_the_figures():
    decision = decide(RetrainPolicy(), figures({"a": 0.0}), champion_version="1")
    assert decision.decision == "retrain" and decision.reason.startswith("policy always")


def test_min_new_rows_counts_growth_of_the_same_location_and_whole_new_drops():
    policy = RetrainPolicy(retrain_policy="min_new_rows", min_new_rows=10_000)
    grown = figures({}, rows_old=100_000, rows_new=104_000, same_location=True)
    assert grown.new_rows == 4_000
    skip = decide(policy, grown, champion_version="1")
    assert skip.skip and skip.reason == "too few new rows (4,000 beyond the champion's < 10,000)"
    drop = figures({}, rows_old=100_000, rows_new=12_000, same_location=False)
    retrain = decide(policy, drop, champion_version="1")
    assert retrain.decision == "retrain" and retrain.reason == "12,000 new rows >= 10,000"


def test_changed_columns_force_a_retrain_even_without_drift():
    changed = figures({"a": 0.0}, schema_changes=("missing feature(s) b",))
    decision = decide(ON_DRIFT, changed, champion_version="1")
    assert decision.decision == "retrain" and "missing feature(s) b" in decision.reason


def test_bad_policy_values_name_the_flag(tmp_path, capsys):
    args = ["--prepared", str(tmp_path), "--model-name", "m", "--retrain-policy", "sometimes",
            "--drift-psi-threshold", "0", "--min-new-rows", "5",
            "--out", str(tmp_path / "o")]  # fmt: skip
    assert drift.main(args) == 2
    err = capsys.readouterr().err
    assert "--retrain-policy='sometimes'" in err and "on_drift" in err
    assert "--drift-psi-threshold=0.0" in err and "> 0.0" in err


# -- the step against a registered champion ---------------------------------------------


def read(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def drift_args(prepared: Path, out: Path, model: str, policy: str = "on_drift") -> list[str]:
    return ["--prepared", str(prepared), "--model-name", model, "--data-location", "drops/new/",
            "--retrain-policy", policy, "--drift-psi-threshold", "0.2",
            "--min-new-rows", "1000", "--out", str(out)]  # fmt: skip


def a_drop(tmp_path: Path, name: str, *, seed: int, drift_by: float) -> Path:
    data = tmp_path / name
    write_sample_data(data, rows=5_000, seed=seed, parts=1, drift=drift_by)
    prepared = tmp_path / f"{name}-prepared"
    assert prep.main(prep_args(data, prepared)) == 0
    return prepared


@pytest.fixture
def champion(session_home, trained, monkeypatch, request) -> str:
    """The session's trained model registered as champion of a model of this test's own."""
    import mlflow

    from steps.tracking import configure_registry

    use_env(monkeypatch, mlflow_env(session_home))
    configure_registry()
    name = "drift-" + request.node.name.replace("_", "-")[:40]
    summary = register.register(
        mlflow.MlflowClient(),
        model_name=name,
        train=read(trained),
        evaluation={"decision": "promote", "champion_version": None, "reasons": []},
        lineage={
            "data_location": "drops/old/",
            "trigger": "t",
            "run_key": "k",
            "code_version": "c",
        },
    )
    assert summary["promoted"]
    return name


def test_first_run_without_a_champion_retrains(session_home, prepared, tmp_path, monkeypatch):
    use_env(monkeypatch, mlflow_env(session_home))
    assert drift.main(drift_args(prepared, tmp_path / "d", "no-such-model")) == 0
    summary = read(tmp_path / "d")
    assert summary["decision"] == "retrain" and summary["champion_version"] is None
    assert "no champion yet" in summary["reason"]
    assert summary["new_rows"] == 20_000 and summary["psi"] == {}


def test_inside_a_job_the_decision_is_tagged_on_the_steps_own_run(
    session_home, prepared, tmp_path, monkeypatch
):
    """On Azure ML the runtime names the step's own run (MLFLOW_RUN_ID); the service
    reads the decision from its tags to start training or not (pipeline/drift_probe.py)."""
    import mlflow

    from pipeline.drift_probe import TAG_DECISION, TAG_REASON
    from steps.tracking import configure_tracking

    use_env(monkeypatch, mlflow_env(session_home))
    client = mlflow.MlflowClient(tracking_uri=mlflow_env(session_home)["MLFLOW_TRACKING_URI"])
    run = client.create_run(configure_tracking())
    monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)

    assert drift.main(drift_args(prepared, tmp_path / "d", "no-such-model")) == 0

    tags = client.get_run(run.info.run_id).data.tags
    assert tags[TAG_DECISION] == "retrain"
    assert tags[TAG_REASON] == read(tmp_path / "d")["reason"]


@pytest.mark.slow
def test_undrifted_drop_is_skipped_with_its_figures_and_a_drifted_one_retrained(champion, tmp_path):
    calm = a_drop(tmp_path, "calm", seed=12, drift_by=0.0)
    assert drift.main(drift_args(calm, tmp_path / "calm-drift", champion)) == 0
    skipped = read(tmp_path / "calm-drift")
    assert skipped["decision"] == "skip" and skipped["champion_version"] == "1"
    assert skipped["max_psi"] < 0.2
    assert skipped["reason"] == f"no drift (max PSI {skipped['max_psi']:.2f} < 0.20)"
    assert len(skipped["psi"]) == 57 and max(skipped["psi"].values()) <= skipped["max_psi"]
    assert skipped["target_rate_old"] == pytest.approx(0.036, abs=0.01)
    assert skipped["new_rows"] == 5_000 and skipped["rows_old"] == 20_000

    shifted = a_drop(tmp_path, "shifted", seed=13, drift_by=1.0)
    assert drift.main(drift_args(shifted, tmp_path / "shifted-drift", champion)) == 0
    retrained = read(tmp_path / "shifted-drift")
    assert retrained["decision"] == "retrain" and retrained["max_psi"] >= 0.2
    assert retrained["reason"].startswith("drift (max PSI ")
    assert retrained["psi"][retrained["max_psi_feature"]] == retrained["max_psi"]


@pytest.mark.slow
def test_on_skip_the_later_steps_do_nothing_and_say_why(champion, prepared, tmp_path):
    """The chain the pipeline runs after a skip: no model, no scoring, no version."""
    import mlflow

    from .conftest import train_args

    out = tmp_path
    assert drift.main(drift_args(prepared, out / "drift", champion)) == 0  # its own data
    reason = "retraining skipped: " + read(out / "drift")["reason"]
    assert reason.startswith("retraining skipped: no drift (max PSI 0.00 < 0.20)")
    assert train.main([*train_args(prepared, out / "train"), "--drift", str(out / "drift")]) == 0
    assert read(out / "train")["skipped_reason"] == reason
    assert not (out / "train" / "model").exists()
    assert score_champion.main(["--prepared", str(prepared), "--model-name", champion,
                                "--drift", str(out / "drift"),
                                "--out", str(out / "champ")]) == 0  # fmt: skip
    assert read(out / "champ")["metrics"] is None
    assert evaluate.main(["--prepared", str(prepared), "--model", str(out / "train"),
                          "--champion", str(out / "champ"), "--gate-metric", "auc",
                          "--gate-min-score", "0.5", "--gate-max-regression", "0.01",
                          "--out", str(out / "eval")]) == 0  # fmt: skip
    assert "decision" not in read(out / "eval")
    assert register.main(["--model", str(out / "train"), "--evaluation", str(out / "eval"),
                          "--model-name", champion, "--out", str(out / "reg")]) == 0  # fmt: skip
    assert read(out / "reg")["model_version"] is None
    assert len(mlflow.MlflowClient().search_model_versions(f"name='{champion}'")) == 1
    assert deploy.main(["--registration", str(out / "reg"), "--prepared", str(prepared),
                        "--target", "local", "--endpoint-name", "drift-e", "--out",
                        str(out / "dep")]) == 0  # fmt: skip
    assert read(out / "dep")["skipped_reason"] == f"{reason}; the current champion keeps serving"
