"""ChampionGate: should a candidate model replace the champion? Pure: values in, decision out.

Two KPIs, both on one test-split metric where higher is better: an absolute floor
(`gate_min_score`) and a maximum regression against the champion scored on the
same split (`gate_max_regression`). Reaching the floor exactly, or regressing by
exactly the allowance, passes. Every decision carries its reasons as sentences
with the numbers, for run records and notifications.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

# Metrics are computed in float64 from the same split; differences below this are noise.
_TOLERANCE = 1e-12


@dataclass(frozen=True)
class GateDecision:
    decision: Literal["promote", "reject"]
    reasons: tuple[str, ...]

    @property
    def promoted(self) -> bool:
        return self.decision == "promote"


@dataclass(frozen=True, kw_only=True)
class ChampionGate:
    metric: Literal["auc", "normalized_gini", "pr_auc"]
    min_score: float
    max_regression: float

    @classmethod
    def from_kpis(cls, kpis) -> ChampionGate:
        """The gate a request's KPIs (steps.params.GateKpis) describe."""
        return cls(
            metric=kpis.gate_metric,
            min_score=kpis.gate_min_score,
            max_regression=kpis.gate_max_regression,
        )

    def decide(
        self,
        candidate: Mapping[str, float],
        *,
        champion: Mapping[str, float] | None = None,
        champion_version: str | None = None,
        champion_note: str | None = None,
    ) -> GateDecision:
        """Judge candidate metrics against the floor and (if any) the champion's metrics."""
        name = self.metric
        score = candidate.get(name)
        if score is None or not math.isfinite(score):
            return GateDecision("reject", (f"candidate {name} could not be computed ({score}).",))
        reasons = []
        rejected = False
        if score < self.min_score - _TOLERANCE:
            rejected = True
            reasons.append(
                f"candidate {name} {score:.4f} is below the floor {self.min_score:.4f} "
                f"(gate_min_score)."
            )
        else:
            reasons.append(
                f"candidate {name} {score:.4f} meets the floor {self.min_score:.4f} "
                "(gate_min_score)."
            )
        label = f"champion v{champion_version}" if champion_version else "champion"
        best = None if champion is None else champion.get(name)
        if best is not None and math.isfinite(best):
            delta = score - best
            if -delta > self.max_regression + _TOLERANCE:
                rejected = True
                reasons.append(
                    f"candidate {name} {score:.4f} is {-delta:.4f} below {label} ({best:.4f}) "
                    f"on the same test split; at most {self.max_regression:.4f} is allowed "
                    "(gate_max_regression)."
                )
            else:
                change = "above" if delta >= 0 else "below"
                reasons.append(
                    f"candidate {name} {score:.4f} is {abs(delta):.4f} {change} {label} "
                    f"({best:.4f}) on the same test split; the allowed regression is "
                    f"{self.max_regression:.4f} (gate_max_regression)."
                )
        elif champion_version:
            note = f" ({champion_note})" if champion_note else ""
            reasons.append(
                f"{label} could not be scored on this test split{note}; judged on the floor only."
            )
        else:
            reasons.append("no champion yet: a candidate that meets the floor becomes champion.")
        return GateDecision("reject" if rejected else "promote", tuple(reasons))
