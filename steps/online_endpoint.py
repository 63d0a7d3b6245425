"""Blue/green deployment to an Azure ML online endpoint (the `aci` and `aks` targets).

Azure ML SDK v2 has no ACI or AKS web services: `aci` maps to a managed online
endpoint and `aks` to a Kubernetes online endpoint on an attached cluster (the
compute named by AML_AKS_COMPUTE). Both serve the registered model
(`azureml:<name>:<version>`, the MLflow model the register step put in the
workspace registry) through the same entry script as the local target,
`steps/score.py`.

Order of work: create the new deployment with 0 % traffic, smoke test it alone
(invoke with its deployment name, i.e. the `azureml-model-deployment` header),
then, if deploy passes `read_champion`, re-read the champion (steps/champion.py)
and shift all traffic to it only if its version is still the champion. A failed
smoke test deletes the new deployment and leaves traffic exactly where it was, then
raises, so the step fails with the reason; a version superseded meanwhile is
deleted the same way and raises Superseded (deploy reports it as skipped).

This module runs inside an Azure ML job: the workspace comes from the job's
environment (AZUREML_ARM_SUBSCRIPTION, AZUREML_ARM_RESOURCEGROUP,
AZUREML_ARM_WORKSPACE_NAME) or from the AML_* settings. It imports nothing from
pipeline/ or triggers/ (steps run alone in the job's container).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from steps.champion import Superseded, check_still_champion
from steps.endpoint_names import check_endpoint_name
from steps.rollback import OWNER_TAG, retired, rollback_target

SCORING_SCRIPT = "steps/score.py"
# No `azureml:` prefix: with it the SDK looks up an environment named "azureml:...".
DEFAULT_ENVIRONMENT = "aml-trigger-steps@latest"
DEFAULT_INSTANCE_TYPE = "Standard_DS3_v2"
_STEPS_DIR = Path(__file__).resolve().parent

_WORKSPACE_ENV = (
    ("AZUREML_ARM_SUBSCRIPTION", "AML_SUBSCRIPTION_ID"),
    ("AZUREML_ARM_RESOURCEGROUP", "AML_RESOURCE_GROUP"),
    ("AZUREML_ARM_WORKSPACE_NAME", "AML_WORKSPACE"),
)


class OnlineDeployError(RuntimeError):
    """The deployment could not be made live; the message says what happened to traffic."""


def workspace_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, str, str]:
    """(subscription, resource group, workspace) from the job, else from AML_* settings."""
    env = os.environ if environ is None else environ
    values, missing = [], []
    for job_name, setting in _WORKSPACE_ENV:
        value = env.get(job_name) or env.get(setting)
        if not value:
            missing.append(f"{job_name} or {setting}")
        values.append(value or "")
    if missing:
        raise OnlineDeployError(
            "cannot tell which Azure ML workspace to deploy to: set " + "; ".join(missing)
        )
    return values[0], values[1], values[2]


def ml_client_from_env(environ: Mapping[str, str] | None = None) -> Any:
    """An MLClient on the job's workspace with the identity the job provides (the
    submitter's on behalf of, or the compute's: steps/job_identity.py)."""
    from azure.ai.ml import MLClient

    from steps.job_identity import job_credential

    subscription, group, workspace = workspace_from_env(environ)
    return MLClient(
        job_credential(environ),
        subscription_id=subscription,
        resource_group_name=group,
        workspace_name=workspace,
        enable_telemetry=False,
    )


def deployment_name(model_version: str) -> str:
    """`model-v<version>`: 3-32 letters, digits or '-', starting with a letter."""
    safe = re.sub(r"[^a-z0-9-]", "-", str(model_version).lower()).strip("-") or "x"
    return f"model-v{safe}"[:32].rstrip("-")


def check_predictions(response: Any, rows: int) -> str | None:
    """None when `response` is score.py's answer for `rows` records, else what is wrong."""
    if isinstance(response, str | bytes):
        try:
            response = json.loads(response)
        except ValueError:
            return f"the answer is not JSON: {str(response)[:200]!r}"
        if isinstance(response, str):  # the server may JSON-encode a JSON string
            try:
                response = json.loads(response)
            except ValueError:
                return f"the answer is not JSON: {response[:200]!r}"
    if not isinstance(response, dict) or "probabilities" not in response:
        return f'the answer has no "probabilities": {str(response)[:200]}'
    probabilities = response["probabilities"]
    if not isinstance(probabilities, list) or len(probabilities) != rows:
        count = len(probabilities) if isinstance(probabilities, list) else "no"
        return f"expected {rows} probabilities, got {count}"
    for value in probabilities:
        if not isinstance(value, int | float) or math.isnan(value) or not 0.0 <= value <= 1.0:
            return f"probability {value!r} is not a number between 0 and 1"
    return None


def deploy_online(
    *,
    target: str,
    endpoint_name: str,
    model_name: str,
    model_version: str,
    sample_rows: list[dict[str, Any]],
    out_dir: Path | str,
    ml_client: Any = None,
    environ: Mapping[str, str] | None = None,
    read_champion: Callable[[], str | None] | None = None,
) -> dict[str, Any]:
    """Deploy `model_name` v`model_version` blue/green; returns deploy's summary."""
    from azure.ai.ml.entities import CodeConfiguration

    env = os.environ if environ is None else environ
    try:
        check_endpoint_name(endpoint_name, field="--endpoint-name")
    except ValueError as exc:
        raise OnlineDeployError(str(exc)) from None
    if target not in {"aci", "aks"}:
        raise OnlineDeployError(f"target {target!r}: deploy_online handles aci and aks")
    if not sample_rows:
        raise OnlineDeployError("no sample rows to smoke test the new deployment with")
    client = ml_client or ml_client_from_env(env)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    endpoint = _ensure_endpoint(client, target, endpoint_name, env)
    previous = dict(endpoint.traffic or {})
    name = deployment_name(model_version)
    if previous.get(name, 0) == 100:
        return _summary(target, endpoint, name, model_version)
    with tempfile.TemporaryDirectory(prefix="aml-trigger-code-") as tmp:
        code = _code_snapshot(Path(tmp))
        deployment = _deployment(
            target,
            name=name,
            endpoint_name=endpoint_name,
            model=f"azureml:{model_name}:{model_version}",
            code=CodeConfiguration(code=str(code), scoring_script=SCORING_SCRIPT),
            env=env,
        )
        try:
            client.online_deployments.begin_create_or_update(deployment).result()
        except Exception as exc:  # noqa: BLE001 - reported with what happened to traffic
            problem = f"creating it failed: {_one_line(exc)}"
        else:
            problem = _smoke_test(client, endpoint_name, name, sample_rows, out)
    kept = ", ".join(f"{k} {v}%" for k, v in previous.items() if v) or "no deployment"
    if problem is None and read_champion is not None:
        # The last moment before the traffic PUT: a rival promotion may have outranked
        # this version since register reported it promoted (docs/azure.md, the race).
        try:
            check_still_champion(model_version, read_champion)
        except Superseded as exc:
            exc.cleanup = f"{_remove(client, endpoint_name, name)}, traffic unchanged ({kept})"
            raise
        except Exception as exc:  # noqa: BLE001 - reported with what happened to traffic
            problem = f"re-reading the champion before the traffic shift failed: {_one_line(exc)}"
    if problem is not None:
        removed = _remove(client, endpoint_name, name)
        raise OnlineDeployError(
            f"deployment {name} on endpoint {endpoint_name}: {problem}; "
            f"{removed}, traffic unchanged ({kept})"
        )

    endpoint.traffic = {key: 0 for key in previous} | {name: 100}
    endpoint = client.online_endpoints.begin_create_or_update(endpoint).result()
    summary = _summary(target, endpoint, name, model_version)
    keep = rollback_target(previous, name)
    summary["rollback_deployment"] = keep
    summary.update(_retire_older(client, endpoint_name, live=name, rollback=keep))
    return summary


def _retire_older(client: Any, endpoint_name: str, *, live: str, rollback: str | None) -> dict:
    """Delete our deployments older than the rollback one. The new deployment is live
    by now, so a failure here is reported in the summary, never fatal."""
    try:
        found = {
            d.name: dict(getattr(d, "tags", None) or {})
            for d in client.online_deployments.list(endpoint_name=endpoint_name)
        }
    except Exception as exc:  # noqa: BLE001 - reported, the promotion stands
        return {"retired_deployments": [], "retire_errors": [f"listing: {_one_line(exc)}"]}
    done, errors = [], []
    for old in retired(found, live=live, rollback=rollback):
        try:
            # Started, not awaited: Azure ML finishes the delete on its own, and the
            # next promotion sees whatever is left.
            client.online_deployments.begin_delete(name=old, endpoint_name=endpoint_name)
            done.append(old)
        except Exception as exc:  # noqa: BLE001 - reported, the promotion stands
            errors.append(f"{old}: {_one_line(exc)}")
    return {"retired_deployments": done, "retire_errors": errors}


def scoring_headers(*, endpoint_name: str, ml_client: Any = None) -> dict[str, str]:
    """The Authorization header the endpoint requires (its key, or an Azure ML token)."""
    client = ml_client or ml_client_from_env()
    credentials = client.online_endpoints.get_keys(name=endpoint_name)
    secret = getattr(credentials, "primary_key", None) or getattr(credentials, "access_token", None)
    if not secret:
        raise OnlineDeployError(f"endpoint {endpoint_name} returned no key or token")
    return {"Authorization": f"Bearer {secret}"}


def _ensure_endpoint(client: Any, target: str, endpoint_name: str, env: Mapping[str, str]) -> Any:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return client.online_endpoints.get(name=endpoint_name)
    except ResourceNotFoundError:
        pass
    if target == "aks":
        from azure.ai.ml.entities import KubernetesOnlineEndpoint

        endpoint = KubernetesOnlineEndpoint(
            name=endpoint_name, compute=_aks_compute(env), auth_mode="key"
        )
    else:
        from azure.ai.ml.entities import ManagedOnlineEndpoint

        endpoint = ManagedOnlineEndpoint(name=endpoint_name, auth_mode="key")
    endpoint.tags = {"aml_trigger.endpoint": endpoint_name}
    return client.online_endpoints.begin_create_or_update(endpoint).result()


def _deployment(
    target: str,
    *,
    name: str,
    endpoint_name: str,
    model: str,
    code: Any,
    env: Mapping[str, str],
) -> Any:
    common = {
        "name": name,
        "endpoint_name": endpoint_name,
        "model": model,
        "code_configuration": code,
        "environment": env.get("AML_DEPLOY_ENVIRONMENT") or DEFAULT_ENVIRONMENT,
        "instance_count": 1,
        "tags": {OWNER_TAG: model},
    }
    if target == "aks":
        from azure.ai.ml.entities import KubernetesOnlineDeployment

        instance_type = env.get("AML_AKS_INSTANCE_TYPE")
        extra = {"instance_type": instance_type} if instance_type else {}
        return KubernetesOnlineDeployment(**common, **extra)
    from azure.ai.ml.entities import ManagedOnlineDeployment

    return ManagedOnlineDeployment(
        **common, instance_type=env.get("AML_INSTANCE_TYPE") or DEFAULT_INSTANCE_TYPE
    )


def _aks_compute(env: Mapping[str, str]) -> str:
    name = env.get("AML_AKS_COMPUTE")
    if not name:
        raise OnlineDeployError(
            "target aks needs AML_AKS_COMPUTE: the name of the Kubernetes compute attached "
            "to the workspace"
        )
    return name


def _smoke_test(
    client: Any, endpoint_name: str, name: str, rows: list[dict[str, Any]], out: Path
) -> str | None:
    request = out / "smoke_request.json"
    request.write_text(json.dumps({"data": rows}, default=str), encoding="utf-8")
    try:
        answer = client.online_endpoints.invoke(
            endpoint_name=endpoint_name, deployment_name=name, request_file=str(request)
        )
    except Exception as exc:  # noqa: BLE001 - any failure to answer fails the test
        return f"smoke test failed: {_one_line(exc)}"
    problem = check_predictions(answer, len(rows))
    return f"smoke test failed: {problem}" if problem else None


def _remove(client: Any, endpoint_name: str, name: str) -> str:
    """Delete the new deployment; a failure to delete is reported, never hidden, and
    never touches traffic (the new deployment has none)."""
    try:
        client.online_deployments.begin_delete(name=name, endpoint_name=endpoint_name).result()
    except Exception as exc:  # noqa: BLE001 - reported in the step's error
        status = getattr(exc, "status_code", None)
        if status == 404:
            return f"{name} was not created"
        return f"deleting {name} failed too ({_one_line(exc)}; delete it by hand)"
    return f"deleted {name}"


def _one_line(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())[:300]
    return f"HTTP {status}: {text}" if status else f"{type(exc).__name__}: {text}"


def _code_snapshot(dest: Path) -> Path:
    """The steps/ package alone (score.py and what it imports). Same content as the
    snapshot `aml-trigger publish` uploads, so Azure ML finds it by hash and does
    not upload it again."""
    shutil.copytree(
        _STEPS_DIR, dest / "steps", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return dest


def _summary(target: str, endpoint: Any, name: str, model_version: str) -> dict[str, Any]:
    return {
        "target": target,
        "endpoint_name": endpoint.name,
        "scoring_uri": getattr(endpoint, "scoring_uri", None),
        "deployment": name,
        "model_version": str(model_version),
        "skipped_reason": None,
    }
