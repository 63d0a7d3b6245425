"""App settings, read in one place (the contract table in design.md).

Secrets (storage connection strings, the function key) are held as SecretStr so
that printing or logging a Settings object never shows them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from steps.endpoint_names import check_endpoint_name, default_endpoint_name
from steps.params import DeployTarget, NewRows, PsiThreshold, RetrainPolicy, RetrainPolicyName

AML_SETTINGS = ("AML_SUBSCRIPTION_ID", "AML_RESOURCE_GROUP", "AML_WORKSPACE")


class SettingsError(ValueError):
    """One or more app settings are invalid; the message names each of them."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    pipeline_backend: Literal["local", "aml"] = Field(
        "local", description="PIPELINE_BACKEND: `local` (embedded executor) or `aml`."
    )
    storage_connection: SecretStr = Field(
        SecretStr(""),
        description="AzureWebJobsStorage: empty = folder storage under AML_TRIGGER_HOME "
        "(unless the account is named by identity, below), `UseDevelopmentStorage=true` = "
        "Azurite, else a connection string.",
    )
    storage_account_url: str | None = Field(
        None,
        pattern=r"^https://[^\s/?#]+/?$",
        description="AzureWebJobsStorage by identity, as the Functions host reads it: "
        "AzureWebJobsStorage__blobServiceUri (or __serviceUri), else "
        "https://<AzureWebJobsStorage__accountName>.blob.core.windows.net.",
    )
    storage_client_id: str | None = Field(
        None,
        description="AzureWebJobsStorage__clientId: the user-assigned managed identity the "
        "account is reached with (with AzureWebJobsStorage__credential=managedidentity).",
    )
    incoming_container: str = Field(
        "incoming",
        pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$",
        description="INCOMING_CONTAINER: container (or folder) watched for new data.",
    )
    train_schedule: str = Field(
        "0 0 2 * * *", description="TRAIN_SCHEDULE: NCRONTAB (6 fields) of the nightly timer."
    )
    aml_subscription_id: str | None = None
    aml_resource_group: str | None = None
    aml_workspace: str | None = None
    aml_pipeline_component: str | None = Field(
        None, description="AML_PIPELINE_COMPONENT: registered pipeline component, name[:version]."
    )
    aml_compute: str | None = None
    aml_prep_compute: str | None = Field(
        None,
        pattern=r"^[A-Za-z][A-Za-z0-9-]{1,31}$",
        description="AML_PREP_COMPUTE: cluster for prep, check_drift and score_champion; "
        "empty = the run's compute.",
    )
    aml_train_compute: str | None = Field(
        None,
        pattern=r"^[A-Za-z][A-Za-z0-9-]{1,31}$",
        description="AML_TRAIN_COMPUTE: cluster for the train slots; empty = the run's compute.",
    )
    aml_preemption_retries: int = Field(
        1,
        ge=0,
        le=3,
        description="AML_PREEMPTION_RETRIES: times a run whose low-priority node was "
        "preempted is submitted again (pipeline/preemption.py); 0 = never.",
    )
    aml_datastore: str = Field(
        "incoming",
        pattern=r"^[A-Za-z0-9_]{1,255}$",
        description="AML_DATASTORE: workspace datastore fronting the incoming container; "
        "Azure ML jobs read their data through it.",
    )
    aml_batch_endpoint: str | None = Field(
        None,
        description="AML_BATCH_ENDPOINT: when set, runs are started by invoking this batch "
        "endpoint's pipeline component deployment instead of submitting a pipeline job.",
    )
    aml_batch_deployment: str | None = Field(
        None,
        description="AML_BATCH_DEPLOYMENT: the deployment of AML_BATCH_ENDPOINT to invoke; "
        "empty = the endpoint's default deployment.",
    )
    function_key: SecretStr | None = Field(
        None, description="AML_TRIGGER_FUNCTION_KEY: key the local host requires."
    )
    home: Path = Field(
        Path(".local"), description="AML_TRIGGER_HOME: state of the embedded default."
    )
    max_concurrent_runs: int = Field(
        1, ge=1, le=64, description="MAX_CONCURRENT_RUNS: runs of the pipeline at once."
    )
    concurrency_policy: Literal["queue", "skip"] = Field(
        "queue",
        description="CONCURRENCY_POLICY: what happens to a run over the limit: wait or skip.",
    )

    # --- when a drop is worth a retrain (defaults of TrainingRequest.retrain) ---------
    retrain_policy: RetrainPolicyName = Field(
        "always",
        description="RETRAIN_POLICY: `always`, `on_drift` (only when the drop drifted from the "
        "champion's training data) or `min_new_rows`.",
    )
    drift_psi_threshold: PsiThreshold = Field(
        0.2, description="DRIFT_PSI_THRESHOLD: PSI at which a feature counts as drifted."
    )
    min_new_rows: NewRows = Field(
        10_000, description="MIN_NEW_ROWS: new rows a drop needs (policy min_new_rows)."
    )

    # --- where a promoted champion is served (defaults of TrainingRequest) --------------
    deploy_target: DeployTarget | None = Field(
        None,
        description="DEPLOY_TARGET: `none`, `local`, `aci` or `aks` for requests that give "
        "none. Unset: `local` on the local backend, `none` on `aml` (deploying needs the "
        "compute's identity to hold rights on the workspace's endpoints, and an endpoint "
        "bills for its instances until deleted: opt in with `aci` or `aks`).",
    )
    endpoint_name: str | None = Field(
        None,
        description="ENDPOINT_NAME: endpoint for requests that give none. Unset: "
        "`porto-seguro-<hash of the workspace>` on `aml` (endpoint names are unique per "
        "Azure region), `porto-seguro` locally.",
    )

    # --- the trigger service (triggers/) -------------------------------------------
    blob_batch_mode: Literal["window", "marker", "each"] = Field(
        "window",
        description="BLOB_BATCH_MODE: how blob arrivals become runs. `window`: one run per "
        "drop folder when its marker arrives or after a quiet window; `marker`: only the "
        "marker file starts a run; `each`: every data blob starts a run of its folder.",
    )
    blob_marker_name: str = Field(
        "_SUCCESS",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="BLOB_MARKER_NAME: file name that marks a drop folder complete.",
    )
    blob_quiet_seconds: float = Field(
        30.0,
        ge=0.0,
        le=86_400.0,
        description="BLOB_QUIET_SECONDS: a drop folder with no new blob for this long is run.",
    )
    blob_max_delay_seconds: float = Field(
        600.0,
        ge=0.0,
        le=7 * 86_400.0,
        description="BLOB_MAX_DELAY_SECONDS: a drop is run at most this long after its first "
        "blob, however steadily blobs keep arriving.",
    )
    blob_max_bytes: int = Field(
        5 * 1024**3,
        ge=1,
        description="BLOB_MAX_BYTES: larger blobs are ignored (with a logged reason).",
    )
    blob_prefix: str = Field(
        "",
        max_length=512,
        description="BLOB_PREFIX: only blobs under this prefix of the incoming container "
        "trigger runs; empty = all.",
    )
    request_max_bytes: int = Field(
        65_536,
        ge=1024,
        le=10 * 1024**2,
        description="REQUEST_MAX_BYTES: largest accepted POST /api/runs body.",
    )
    train_data_prefix: str = Field(
        "",
        max_length=512,
        description="TRAIN_DATA_PREFIX: folder of the incoming container the nightly timer "
        "trains on; empty = the whole container.",
    )
    public_base_url: str = Field(
        "http://127.0.0.1:7071",
        max_length=512,
        description="PUBLIC_BASE_URL: base of the run links sent in notifications; in Azure "
        "defaults to https://<WEBSITE_HOSTNAME>.",
    )
    public_base_url_configured: bool = Field(
        False,
        description="PUBLIC_BASE_URL or WEBSITE_HOSTNAME was set, so public_base_url is the "
        "app's real address; otherwise links in HTTP answers follow the request's own origin.",
    )
    status_retry_after_seconds: int = Field(
        30,
        ge=1,
        le=3600,
        description="STATUS_RETRY_AFTER_SECONDS: the Retry-After of 202 answers, i.e. how long "
        "pollers (Logic Apps) wait between checks of GET /api/runs/{run_id}/status.",
    )
    running_in_azure: bool = Field(
        False,
        description="Set when WEBSITE_INSTANCE_ID is present (the App Service host): callback "
        "URLs must then resolve to public addresses.",
    )

    @field_validator("endpoint_name")
    @classmethod
    def _endpoint_name_rule(cls, value: str | None) -> str | None:
        return None if value is None else check_endpoint_name(value, field="ENDPOINT_NAME")

    @model_validator(mode="after")
    def _target_runs_on_backend(self) -> Settings:
        if self.pipeline_backend == "aml" and self.deploy_target == "local":
            raise ValueError(
                "DEPLOY_TARGET local cannot serve from Azure ML (the scoring server would "
                "stop with the job's container); accepted with PIPELINE_BACKEND=aml: none, "
                "aci, aks"
            )
        return self

    def deployment_defaults(self) -> tuple[str, str]:
        """(deploy target, endpoint name) for a request that names neither: the one
        place the per-backend defaults are decided."""
        aml = self.pipeline_backend == "aml"
        target = self.deploy_target or ("none" if aml else "local")
        endpoint = self.endpoint_name or (
            default_endpoint_name(
                self.aml_subscription_id, self.aml_resource_group, self.aml_workspace
            )
            if aml
            else default_endpoint_name(None, None, None)
        )
        return target, endpoint

    def deployment_inputs(self) -> dict[str, str]:
        """deployment_defaults() as TrainingRequest.pipeline_inputs' keywords."""
        target, endpoint = self.deployment_defaults()
        return {"deploy_target": target, "endpoint_name": endpoint}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        raw = {
            "pipeline_backend": env.get("PIPELINE_BACKEND") or "local",
            "storage_connection": SecretStr(env.get("AzureWebJobsStorage", "")),
            "storage_account_url": _storage_account_url(env),
            "storage_client_id": env.get("AzureWebJobsStorage__clientId") or None,
            "incoming_container": env.get("INCOMING_CONTAINER") or "incoming",
            "train_schedule": env.get("TRAIN_SCHEDULE") or "0 0 2 * * *",
            "aml_subscription_id": env.get("AML_SUBSCRIPTION_ID") or None,
            "aml_resource_group": env.get("AML_RESOURCE_GROUP") or None,
            "aml_workspace": env.get("AML_WORKSPACE") or None,
            "aml_pipeline_component": env.get("AML_PIPELINE_COMPONENT") or None,
            "aml_compute": env.get("AML_COMPUTE") or None,
            "aml_prep_compute": env.get("AML_PREP_COMPUTE") or None,
            "aml_train_compute": env.get("AML_TRAIN_COMPUTE") or None,
            "aml_preemption_retries": env.get("AML_PREEMPTION_RETRIES") or 1,
            "aml_datastore": env.get("AML_DATASTORE") or "incoming",
            "aml_batch_endpoint": env.get("AML_BATCH_ENDPOINT") or None,
            "aml_batch_deployment": env.get("AML_BATCH_DEPLOYMENT") or None,
            "function_key": SecretStr(env["AML_TRIGGER_FUNCTION_KEY"])
            if env.get("AML_TRIGGER_FUNCTION_KEY")
            else None,
            "home": Path(env.get("AML_TRIGGER_HOME") or ".local"),
            "max_concurrent_runs": env.get("MAX_CONCURRENT_RUNS") or 1,
            "concurrency_policy": env.get("CONCURRENCY_POLICY") or "queue",
            "retrain_policy": env.get("RETRAIN_POLICY") or "always",
            "drift_psi_threshold": env.get("DRIFT_PSI_THRESHOLD") or 0.2,
            "min_new_rows": env.get("MIN_NEW_ROWS") or 10_000,
            "deploy_target": env.get("DEPLOY_TARGET") or None,
            "endpoint_name": env.get("ENDPOINT_NAME") or None,
            "blob_batch_mode": env.get("BLOB_BATCH_MODE") or "window",
            "blob_marker_name": env.get("BLOB_MARKER_NAME") or "_SUCCESS",
            "blob_quiet_seconds": env.get("BLOB_QUIET_SECONDS") or 30.0,
            "blob_max_delay_seconds": env.get("BLOB_MAX_DELAY_SECONDS") or 600.0,
            "blob_max_bytes": env.get("BLOB_MAX_BYTES") or 5 * 1024**3,
            "blob_prefix": env.get("BLOB_PREFIX") or "",
            "request_max_bytes": env.get("REQUEST_MAX_BYTES") or 65_536,
            "train_data_prefix": env.get("TRAIN_DATA_PREFIX") or "",
            "public_base_url": env.get("PUBLIC_BASE_URL")
            or (
                f"https://{env['WEBSITE_HOSTNAME']}"
                if env.get("WEBSITE_HOSTNAME")
                else "http://127.0.0.1:7071"
            ),
            "public_base_url_configured": bool(
                env.get("PUBLIC_BASE_URL") or env.get("WEBSITE_HOSTNAME")
            ),
            "status_retry_after_seconds": env.get("STATUS_RETRY_AFTER_SECONDS") or 30,
            "running_in_azure": bool(env.get("WEBSITE_INSTANCE_ID")),
        }
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise SettingsError(_describe(exc)) from None

    @property
    def storage_kind(self) -> Literal["folder", "azurite", "azure"]:
        value = self.storage_connection.get_secret_value().strip()
        if not value:
            return "azure" if self.storage_account_url else "folder"
        if value.lower().startswith("usedevelopmentstorage=true"):
            return "azurite"
        return "azure"

    @property
    def retrain_defaults(self) -> RetrainPolicy:
        return RetrainPolicy(
            retrain_policy=self.retrain_policy,
            drift_psi_threshold=self.drift_psi_threshold,
            min_new_rows=self.min_new_rows,
        )

    def missing_for_aml(self) -> list[str]:
        """Names of the settings the Azure ML backend needs and does not have."""
        present = {
            "AML_SUBSCRIPTION_ID": self.aml_subscription_id,
            "AML_RESOURCE_GROUP": self.aml_resource_group,
            "AML_WORKSPACE": self.aml_workspace,
            "AML_PIPELINE_COMPONENT": self.aml_pipeline_component,
        }
        return [name for name, value in present.items() if not value]


def _storage_account_url(env: Mapping[str, str]) -> str | None:
    """The blob endpoint of an identity-based AzureWebJobsStorage, in the host's order
    (blob trigger docs, "Identity-based connections"; the blob SDK-type extension
    reads the same names)."""
    account = env.get("AzureWebJobsStorage__accountName")
    for name in ("AzureWebJobsStorage__blobServiceUri", "AzureWebJobsStorage__serviceUri"):
        if env.get(name):
            return env[name]
    return f"https://{account}.blob.core.windows.net" if account else None


_ENV_NAMES = {
    "storage_account_url": "AzureWebJobsStorage__blobServiceUri",
    "storage_client_id": "AzureWebJobsStorage__clientId",
    "pipeline_backend": "PIPELINE_BACKEND",
    "incoming_container": "INCOMING_CONTAINER",
    "train_schedule": "TRAIN_SCHEDULE",
    "home": "AML_TRIGGER_HOME",
    "max_concurrent_runs": "MAX_CONCURRENT_RUNS",
    "concurrency_policy": "CONCURRENCY_POLICY",
    "retrain_policy": "RETRAIN_POLICY",
    "drift_psi_threshold": "DRIFT_PSI_THRESHOLD",
    "min_new_rows": "MIN_NEW_ROWS",
    "deploy_target": "DEPLOY_TARGET",
    "endpoint_name": "ENDPOINT_NAME",
    "blob_batch_mode": "BLOB_BATCH_MODE",
    "blob_marker_name": "BLOB_MARKER_NAME",
    "blob_quiet_seconds": "BLOB_QUIET_SECONDS",
    "blob_max_delay_seconds": "BLOB_MAX_DELAY_SECONDS",
    "blob_max_bytes": "BLOB_MAX_BYTES",
    "blob_prefix": "BLOB_PREFIX",
    "request_max_bytes": "REQUEST_MAX_BYTES",
    "train_data_prefix": "TRAIN_DATA_PREFIX",
    "public_base_url": "PUBLIC_BASE_URL",
    "status_retry_after_seconds": "STATUS_RETRY_AFTER_SECONDS",
}


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        if not err["loc"]:  # a rule across settings: its message names them
            parts.append(err["msg"].removeprefix("Value error, "))
            continue
        field = str(err["loc"][0])
        name = _ENV_NAMES.get(field, field.upper())
        value = err.get("input")
        shown = "" if field in {"storage_connection", "function_key"} else f" (got {value!r})"
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{name}: {message}{shown}")
    return "invalid app settings: " + "; ".join(parts)
