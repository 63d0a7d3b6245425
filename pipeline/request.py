"""TrainingRequest: everything one pipeline run needs, validated before submission.

The same model validates HTTP bodies, timer defaults and blob events. It is strict
(no type coercion from JSON), rejects unknown fields, and bounds every size, so a
request that passes here cannot fail the pipeline for a reason we could have seen.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from steps._cli import UNSET
from steps.candidates import (
    MAX_CANDIDATES,
    TrainOverrides,
    candidate_params,
    changed,
    format_overrides,
)
from steps.endpoint_names import BASE_NAME as BASE_ENDPOINT_NAME
from steps.endpoint_names import RULE as ENDPOINT_NAME_RULE
from steps.endpoint_names import check_endpoint_name
from steps.params import (
    DeployTarget,
    GateKpis,
    NewRows,
    PsiThreshold,
    RetrainPolicy,
    RetrainPolicyName,
    SplitParams,
    TrainParams,
)

_NAME = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+@ -]{0,127}$")


class RetrainOverrides(BaseModel):
    """A request's retraining policy; None = the app setting (see RetrainPolicy)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    retrain_policy: RetrainPolicyName | None = Field(
        None, description=RetrainPolicy.model_fields["retrain_policy"].description
    )
    drift_psi_threshold: PsiThreshold | None = Field(
        None, description=RetrainPolicy.model_fields["drift_psi_threshold"].description
    )
    min_new_rows: NewRows | None = Field(
        None, description=RetrainPolicy.model_fields["min_new_rows"].description
    )

    def resolve(self, defaults: RetrainPolicy) -> RetrainPolicy:
        given = {k: v for k, v in self.model_dump().items() if v is not None}
        return defaults.model_copy(update=given)


class TrainingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    data: str = Field(
        "",
        max_length=512,
        description="Folder (prefix) inside the incoming container holding the data parts, "
        "e.g. `drops/2026-11-22/`; empty means the whole container. Relative, "
        "no `..`, no URL: data from other containers or accounts is refused.",
    )
    params: TrainParams = Field(default_factory=TrainParams, description="LightGBM parameters.")
    candidates: list[TrainOverrides] = Field(  # type: ignore[valid-type]
        default_factory=list,
        max_length=MAX_CANDIDATES,
        description=f"Up to {MAX_CANDIDATES} parameter sets trained side by side, each the "
        '`params` fields it changes, e.g. [{"num_leaves": 31}, {"num_leaves": 127}]; the '
        "best by validation AUC goes on to the gate. Empty: `params` alone.",
    )
    split: SplitParams = Field(default_factory=SplitParams, description="Data split settings.")
    gate: GateKpis = Field(default_factory=GateKpis, description="ChampionGate KPIs.")
    retrain: RetrainOverrides = Field(
        default_factory=RetrainOverrides,
        description="When the drop is worth a retrain; each field left out (null) takes the "
        "app setting (RETRAIN_POLICY, DRIFT_PSI_THRESHOLD, MIN_NEW_ROWS).",
    )
    model_name: str = Field(
        "porto-seguro-lgbm", pattern=_NAME, description="Registered model name."
    )
    deploy_target: DeployTarget | None = Field(
        None,
        description="`local` scoring server (local backend only), `aci` (managed online "
        "endpoint), `aks` (Kubernetes online endpoint) or `none`. Null: the DEPLOY_TARGET "
        "setting, whose default is `local` on the local backend and `none` on `aml`.",
    )
    endpoint_name: str | None = Field(
        None,
        description="Endpoint the champion is served from: " + ENDPOINT_NAME_RULE + ". "
        "Null: the ENDPOINT_NAME setting, else a name derived from the workspace "
        "(porto-seguro-<hash>) on `aml`, `porto-seguro` locally.",
    )
    compute: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="Azure ML compute target(s); several fan out into one comparison group. "
        "Empty: AML_COMPUTE. Ignored by the local backend.",
    )
    prep_compute: str | None = Field(
        None,
        description="Azure ML cluster for prep, check_drift and score_champion; null: "
        "AML_PREP_COMPUTE, else the run's compute. Ignored by the local backend.",
    )
    train_compute: str | None = Field(
        None,
        description="Azure ML cluster for the train slots; null: AML_TRAIN_COMPUTE, else the "
        "run's compute. Not with several `compute` (they are the training computes compared).",
    )
    experiment: str = Field("aml-trigger", pattern=_NAME, description="Experiment name.")
    tags: dict[str, str] = Field(
        default_factory=dict, max_length=20, description="Free-form tags (<=20) kept with the run."
    )
    reason: str = Field("", max_length=500, description="Why this run was asked for.")
    callback_url: str | None = Field(
        None,
        max_length=2048,
        description="Notified with a JSON summary when the run ends. https only "
        "(http only to loopback when running locally).",
    )
    dry_run: bool = Field(False, description="Validate and show the job without submitting.")

    @field_validator("endpoint_name")
    @classmethod
    def _endpoint_name_rule(cls, value: str | None) -> str | None:
        return None if value is None else check_endpoint_name(value)

    @field_validator("data")
    @classmethod
    def _data_inside_container(cls, value: str) -> str:
        return normalize_data_prefix(value)

    @field_validator("candidates")
    @classmethod
    def _distinct_candidates(cls, value: list, info: ValidationInfo) -> list:
        # Compared as the parameters they train with: {} and {"num_leaves": 31} are the
        # same candidate when params.num_leaves is 31, and training it twice is waste.
        base = info.data.get("params") or TrainParams()
        seen: dict[str, int] = {}
        for index, candidate in enumerate(value):
            key = candidate_params(base, changed(candidate)).model_dump_json()
            if key in seen:
                raise ValueError(
                    f"candidates[{index}] trains the same parameters as "
                    f"candidates[{seen[key]}]; each candidate must differ"
                )
            seen[key] = index
        return value

    @field_validator("compute")
    @classmethod
    def _compute_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(r"^[A-Za-z][A-Za-z0-9-]{1,31}$", name):
                raise ValueError(
                    f"compute target {name!r} is not a valid name "
                    "(2-32 letters, digits or '-', starting with a letter)"
                )
        if len(set(value)) != len(value):
            raise ValueError("compute targets must not repeat")
        return value

    @field_validator("prep_compute", "train_compute")
    @classmethod
    def _step_compute_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            cls._compute_names([value])
        if value is not None and info.field_name == "train_compute":
            if len(info.data.get("compute") or []) > 1:
                raise ValueError(
                    "train_compute with several `compute` targets: the fan-out already "
                    "trains on each of them; give one or the other"
                )
        return value

    @field_validator("tags")
    @classmethod
    def _tag_sizes(cls, value: dict[str, str]) -> dict[str, str]:
        for key, tag in value.items():
            if not re.fullmatch(r"^[A-Za-z0-9_.:-]{1,64}$", key):
                raise ValueError(f"tag key {key!r}: 1-64 letters, digits, '_', '.', ':' or '-'")
            if len(tag) > 256:
                raise ValueError(f"tag {key!r}: value longer than 256 characters")
        return value

    @field_validator("callback_url")
    @classmethod
    def _callback_shape(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"https", "http"} or not parts.hostname:
            raise ValueError("callback_url must be an absolute https:// URL")
        if parts.username or parts.password:
            raise ValueError("callback_url must not carry credentials")
        return value

    def pipeline_inputs(
        self,
        *,
        data_uri: str,
        lineage: dict[str, str],
        retrain_defaults: RetrainPolicy | None = None,
        deploy_target: str = "local",
        endpoint_name: str = BASE_ENDPOINT_NAME,
    ) -> dict[str, Any]:
        """Flatten into the pipeline component's inputs (names as in the YAML).

        `data_uri` is where the executor finds the data (a local folder or an
        azureml:// URI); `lineage` carries trigger, run_key and code_version;
        `retrain_defaults`, `deploy_target` and `endpoint_name` (the app settings,
        see Settings.deployment_defaults) fill what the request leaves out.
        No string input is ever "": Azure ML cannot pass one (steps._cli.UNSET).
        """
        inputs: dict[str, Any] = {"training_data": data_uri}
        inputs.update(self.params.model_dump())
        inputs.update(self.candidate_inputs())
        inputs.update(self.split.model_dump())
        inputs.update(self.gate.model_dump())
        inputs.update(self.retrain.resolve(retrain_defaults or RetrainPolicy()).model_dump())
        inputs.update(
            model_name=self.model_name,
            deploy_target=self.deploy_target or deploy_target,
            endpoint_name=self.endpoint_name or endpoint_name,
            data_location=self.data or UNSET,
            trigger=lineage.get("trigger", "manual"),
            run_key=shell_safe(lineage.get("run_key", "")) or UNSET,
            code_version=lineage.get("code_version", "dev"),
        )
        return inputs

    def candidate_inputs(self) -> dict[str, Any]:
        """candidate_count and one overrides string per train slot (slot 0 trains
        `params` as they are when no candidates are given)."""
        texts = [format_overrides(c) or UNSET for c in self.candidates] or [UNSET]
        inputs: dict[str, Any] = {"candidate_count": len(texts)}
        for slot in range(MAX_CANDIDATES):
            inputs[f"candidate_{slot}"] = texts[slot] if slot < len(texts) else UNSET
        return inputs

    def backend_refusals(self, backend: str) -> list[dict[str, Any]]:
        """What this request asks that the backend cannot do, as 422 details (path,
        value, message); empty when it can run there."""
        if backend == "aml" and self.deploy_target == "local":
            return [
                {
                    "path": "deploy_target",
                    "value": "local",
                    "message": "`local` serves the model from the machine running the "
                    "pipeline; on Azure ML that is the job's container, which stops with "
                    "the job. Accepted on the aml backend: none, aci, aks",
                }
            ]
        return []


def shell_safe(value: str) -> str:
    """Percent-encode what a shell would interpret. Azure ML runs a component's
    command through bash with literal inputs pasted between single quotes, so a
    client's Idempotency-Key such as `it's $(x)` must not reach it raw. Lineage
    only: the exact key stays in the ledger and in the job's tags."""
    from urllib.parse import quote

    return quote(value, safe=":/@=+-._~,")


def normalize_data_prefix(value: str) -> str:
    """A prefix inside the incoming container, or ValueError saying what is accepted."""
    raw = value.strip()
    if "://" in raw or raw.startswith(("\\\\", "//")):
        raise ValueError(
            f"data {value!r}: URLs and other accounts are not accepted; "
            "give a folder inside the incoming container, e.g. 'drops/2026-11-22/'"
        )
    if "\\" in raw or "\x00" in raw or any(ord(c) < 32 for c in raw):
        raise ValueError(f"data {value!r}: backslashes and control characters are not accepted")
    if raw.startswith("/"):
        raise ValueError(f"data {value!r}: must be relative to the incoming container")
    segments = [s for s in raw.split("/") if s]
    for segment in segments:
        if segment in {".", ".."}:
            raise ValueError(f"data {value!r}: '.' and '..' segments are not accepted")
        if not _SEGMENT.fullmatch(segment):
            raise ValueError(
                f"data {value!r}: segment {segment!r} has characters outside "
                "letters, digits and _ . = + @ - space"
            )
    return "/".join(segments) + ("/" if segments else "")
