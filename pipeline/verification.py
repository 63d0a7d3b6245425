"""VerificationRequest: check a model trained elsewhere before anyone relies on it.

A data scientist names a model folder and a verification data folder (both inside
the incoming container, like a training request's `data`) and the KPIs. The
verify pipeline (pipeline/verify_model_pipeline.yaml) deploys the model to a
throw-away test endpoint, scores the data through it over HTTP, tears the endpoint
down, and judges the result with the same ChampionGate as training: the KPIs'
floor, and no more than the allowed regression against the champion on the same
rows. Nothing is registered, promoted or deployed to the champion's endpoint.

It goes through the same trigger service as training (validation, ledger,
idempotency, the concurrency limit, the callback on a terminal state); the
ledger stores the request with `kind: verify`, which is how a stored request is
read back as one or the other (`stored_request`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.request import TrainingRequest, normalize_data_prefix
from steps.params import GateKpis

_NAME = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
VERIFY_PIPELINE_YAML = Path(__file__).resolve().parent / "verify_model_pipeline.yaml"


class VerificationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    kind: Literal["verify"] = Field("verify", description="Always `verify`.")
    model: str = Field(
        ...,
        min_length=1,
        max_length=512,
        description="Folder inside the incoming container holding the model: an MLflow "
        "model folder (with its MLmodel file), or a model file plus `score.py` (init()/"
        "run(), the Azure ML entry script contract) and an optional `requirements.txt`.",
    )
    data: str = Field(
        ...,
        min_length=1,
        max_length=512,
        description="Folder inside the incoming container with the verification rows "
        "(CSV / CSV.gz / Parquet parts, with the target column).",
    )
    target_column: str = Field(
        "target", pattern=_NAME, description="The 0/1 label column of the verification data."
    )
    gate: GateKpis = Field(default_factory=GateKpis, description="The KPIs the model must meet.")
    model_name: str = Field(
        "porto-seguro-lgbm",
        pattern=_NAME,
        description="Registered model whose champion the submitted model is compared with.",
    )
    scoring: Literal["endpoint", "batch"] = Field(
        "endpoint",
        description="How the model is scored on the `aml` backend: `endpoint`, a throw-away "
        "managed online deployment at 0 % traffic, scored over HTTPS and deleted; `batch`, "
        "scored inside the verify job on its compute cluster (the inference server in the "
        "job's container). The local backend runs both on a local test endpoint.",
    )
    compute: str | None = Field(
        None,
        description="Azure ML cluster of the verify job; null: AML_COMPUTE. Ignored locally.",
    )
    experiment: str = Field("aml-trigger", pattern=_NAME, description="Experiment name.")
    tags: dict[str, str] = Field(
        default_factory=dict, max_length=20, description="Free-form tags (<=20), e.g. originator."
    )
    reason: str = Field("", max_length=500, description="Why this verification was asked for.")
    callback_url: str | None = Field(
        None,
        max_length=2048,
        description="Notified with a JSON summary when the verification ends. https only "
        "(http only to loopback when running locally).",
    )
    dry_run: bool = Field(False, description="Validate and show the job without submitting.")

    @field_validator("model", "data")
    @classmethod
    def _inside_container(cls, value: str) -> str:
        prefix = normalize_data_prefix(value)
        if not prefix:
            raise ValueError("give a folder inside the incoming container, not the whole of it")
        return prefix

    @field_validator("tags")
    @classmethod
    def _tag_sizes(cls, value: dict[str, str]) -> dict[str, str]:
        return TrainingRequest._tag_sizes(value)

    @field_validator("compute")
    @classmethod
    def _compute_name(cls, value: str | None) -> str | None:
        return value if value is None else TrainingRequest._compute_names([value])[0]

    @field_validator("callback_url")
    @classmethod
    def _callback_shape(cls, value: str | None) -> str | None:
        return TrainingRequest._callback_shape(value)

    def pipeline_inputs(
        self, *, data_uri: str, model_uri: str, endpoint: str = "local"
    ) -> dict[str, Any]:
        """The verify pipeline's inputs (names as in its YAML). `endpoint` is where the
        test endpoint runs: `local` (in the step's own container or process) or
        `managed` (Azure ML registers the model by `model_uri` and deploys it)."""
        inputs = {
            "model": model_uri,
            "verification_data": data_uri,
            "target_column": self.target_column,
            "model_name": self.model_name,
            "endpoint": endpoint,
            **self.gate.model_dump(),
        }
        if endpoint == "managed":
            inputs["model_uri"] = model_uri
        return inputs


AnyRequest = TrainingRequest | VerificationRequest


def stored_request(raw: dict[str, Any]) -> AnyRequest:
    """A request as the ledger or a run record keeps it, read back as its kind."""
    import json

    model = VerificationRequest if raw.get("kind") == "verify" else TrainingRequest
    return model.model_validate_json(json.dumps(raw))
