"""The pipeline's tunable parameters and their bounds: one source of truth.

The pipeline YAML declares the same inputs (a test checks names, defaults and
bounds agree), the steps validate their CLI arguments with these models, and the
trigger service validates requests with them before anything is submitted.
Only pydantic is imported here: this module is loaded by the Functions app.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)


class TrainParams(BaseModel):
    """LightGBM training parameters (binary objective)."""

    model_config = _STRICT

    learning_rate: float = Field(0.05, gt=0.0, le=1.0, description="Boosting learning rate.")
    num_leaves: int = Field(31, ge=2, le=4096, description="Maximum leaves per tree.")
    num_boost_round: int = Field(
        1000, ge=1, le=20000, description="Maximum boosting rounds (early stopping may end sooner)."
    )
    early_stopping_rounds: int = Field(
        50,
        ge=0,
        le=5000,
        description="Stop after this many rounds without validation gain; 0 = off.",
    )
    min_data_in_leaf: int = Field(100, ge=1, le=1_000_000, description="Minimum rows per leaf.")
    feature_fraction: float = Field(
        0.8, gt=0.0, le=1.0, description="Fraction of features sampled per tree."
    )
    bagging_fraction: float = Field(
        0.8, gt=0.0, le=1.0, description="Fraction of rows sampled per iteration."
    )
    lambda_l2: float = Field(1.0, ge=0.0, le=1000.0, description="L2 regularisation.")
    class_weight: Literal["none", "balanced"] = Field(
        "none", description="`balanced` weights the rare positive class up (scale_pos_weight)."
    )
    seed: int = Field(42, ge=0, le=2**31 - 1, description="Seed for the split and for LightGBM.")
    num_threads: int = Field(0, ge=0, le=256, description="LightGBM threads; 0 = all cores.")


class SplitParams(BaseModel):
    """How prep splits the data (stratified on the target, seeded by TrainParams.seed)."""

    model_config = _STRICT

    valid_fraction: float = Field(0.15, gt=0.0, lt=0.5, description="Share of rows for validation.")
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5, description="Share of rows for test.")
    min_rows: int = Field(
        1000,
        ge=50,
        le=100_000_000,
        description="Fewer usable rows than this fails the run at prep.",
    )


class GateKpis(BaseModel):
    """The ChampionGate's KPIs: an absolute floor and a maximum regression."""

    model_config = _STRICT

    gate_metric: Literal["auc", "normalized_gini", "pr_auc"] = Field(
        "auc", description="Test-split metric the gate judges (higher is better)."
    )
    gate_min_score: float = Field(
        0.6, ge=-1.0, le=1.0, description="Floor: a candidate below this is rejected."
    )
    gate_max_regression: float = Field(
        0.005,
        ge=0.0,
        le=1.0,
        description="A candidate more than this below the champion (same split) is rejected.",
    )


DeployTarget = Literal["none", "local", "aci", "aks"]


RetrainPolicyName = Literal["always", "on_drift", "min_new_rows"]
# Shared by RetrainPolicy, the request's overrides and the app settings.
PsiThreshold = Annotated[float, Field(gt=0.0, le=10.0)]
NewRows = Annotated[int, Field(ge=1, le=100_000_000)]


class RetrainPolicy(BaseModel):
    """When a data drop is worth a retrain (check_drift applies it after prep)."""

    model_config = _STRICT

    retrain_policy: RetrainPolicyName = Field(
        "always",
        description="`always` retrains on every drop; `on_drift` only when a feature's (or the "
        "target's) PSI against the champion's training data reaches drift_psi_threshold; "
        "`min_new_rows` only when the drop brings at least min_new_rows new rows.",
    )
    drift_psi_threshold: PsiThreshold = Field(
        0.2, description="PSI at or above which a feature counts as drifted (on_drift)."
    )
    min_new_rows: NewRows = Field(
        10_000, description="New rows a drop needs to be trained on (min_new_rows)."
    )


def add_gate_flags(parser) -> None:
    """The gate's KPI flags, shared by every step that judges a model."""
    parser.add_argument("--gate-metric", required=True, help="auc, normalized_gini or pr_auc.")
    parser.add_argument("--gate-min-score", type=float, required=True, help="The floor.")
    parser.add_argument(
        "--gate-max-regression", type=float, required=True, help="Allowed drop vs the champion."
    )


def gate_kpis(args) -> GateKpis:
    """The KPIs from add_gate_flags' flags, validated (StepError naming the flag)."""
    from steps._cli import validated

    return validated(
        GateKpis,
        {
            "gate_metric": args.gate_metric,
            "gate_min_score": args.gate_min_score,
            "gate_max_regression": args.gate_max_regression,
        },
    )
