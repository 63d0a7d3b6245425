"""ChampionGate as a specification: plain numbers in, a decision with reasons out."""

from __future__ import annotations

import math

from steps.gate import ChampionGate

GATE = ChampionGate(metric="auc", min_score=0.6, max_regression=0.005)


def metrics(auc: float) -> dict[str, float]:
    return {"auc": auc, "normalized_gini": 2 * auc - 1, "pr_auc": 0.1, "log_loss": 0.15}


def test_first_model_above_the_floor_becomes_champion():
    decision = GATE.decide(metrics(0.68))
    assert decision.decision == "promote" and decision.promoted
    assert "0.6800" in decision.reasons[0] and "0.6000" in decision.reasons[0]
    assert "no champion yet" in decision.reasons[1]


def test_below_the_floor_is_rejected_even_without_a_champion():
    decision = GATE.decide(metrics(0.59))
    assert decision.decision == "reject"
    assert "below the floor 0.6000" in decision.reasons[0]


def test_exactly_at_the_floor_passes():
    assert GATE.decide(metrics(0.6)).promoted


def test_regression_beyond_the_allowance_is_rejected():
    decision = GATE.decide(metrics(0.690), champion=metrics(0.700), champion_version="3")
    assert decision.decision == "reject"
    assert "0.0100 below champion v3 (0.7000)" in decision.reasons[1]
    assert "at most 0.0050" in decision.reasons[1]


def test_regression_within_the_allowance_and_ties_pass():
    small_drop = GATE.decide(metrics(0.697), champion=metrics(0.700), champion_version="3")
    assert small_drop.promoted and "0.0030 below champion v3" in small_drop.reasons[1]
    exact = GATE.decide(metrics(0.695), champion=metrics(0.700), champion_version="3")
    assert exact.promoted
    tie = GATE.decide(metrics(0.7), champion=metrics(0.7), champion_version="3")
    assert tie.promoted and "0.0000 above champion v3" in tie.reasons[1]


def test_both_rules_report_when_both_fail():
    gate = ChampionGate(metric="auc", min_score=0.75, max_regression=0.0)
    decision = gate.decide(metrics(0.70), champion=metrics(0.72), champion_version="1")
    assert decision.decision == "reject" and len(decision.reasons) == 2
    assert "floor" in decision.reasons[0] and "gate_max_regression" in decision.reasons[1]


def test_the_gate_judges_the_configured_metric():
    gate = ChampionGate(metric="normalized_gini", min_score=0.3, max_regression=0.0)
    assert gate.decide(metrics(0.66)).promoted  # gini 0.32
    assert not gate.decide(metrics(0.64)).promoted  # gini 0.28


def test_an_unscorable_champion_leaves_the_floor_to_decide():
    decision = GATE.decide(metrics(0.65), champion=None, champion_version="4", champion_note="boom")
    assert decision.promoted
    assert (
        "champion v4 could not be scored" in decision.reasons[1] and "boom" in decision.reasons[1]
    )


def test_a_candidate_metric_that_is_not_a_number_is_rejected():
    assert GATE.decide({"auc": math.nan}).decision == "reject"
    assert GATE.decide({}).decision == "reject"
