"""A submitted model on a throw-away Azure ML managed online deployment, scored, deleted.

Used by steps/verify_endpoint.py when the verification asks for an endpoint on Azure
ML (`--endpoint managed`). Runs inside the Azure ML job with the compute's identity
(steps/online_endpoint.py: workspace from AZUREML_ARM_*); never in the Function App.

1. Register the submitted folder as a model (`<model_name>-verify`, by reference to
   its datastore path: nothing is copied) so the deployment and its lineage name it.
   The champion's registered model is never written to.
2. Create an endpoint of its own (`verify-<12 hex>`: names are unique per region,
   3-32 characters) and one deployment, `verify`, with no traffic: the endpoint's
   traffic map stays empty (0 %), and it is invoked by deployment name, i.e. the
   `azureml-model-deployment` header.
   An MLflow folder is served by steps/verify_mlflow_score.py in the step environment
   (the answer contract of every entry script here); a score.py folder by its own
   score.py in the folder's conda file's environment, else the step environment.
3. Score every row, `BATCH_ROWS` per request.
4. Delete the endpoint (its deployment goes with it) whatever happened before; a
   failed delete is reported, never hidden: a deployment bills until deleted.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from steps.online_endpoint import (
    DEFAULT_ENVIRONMENT,
    DEFAULT_INSTANCE_TYPE,
    _code_snapshot,
    _one_line,
    check_predictions,
    ml_client_from_env,
)

DEPLOYMENT = "verify"
BATCH_ROWS = 1000
_CONDA_FILES = ("conda.yml", "conda.yaml", "environment.yml")


class ManagedVerifyError(RuntimeError):
    """The model could not be scored on its test deployment; says what was torn down."""


def endpoint_name() -> str:
    return f"verify-{uuid.uuid4().hex[:12]}"


def verify_on_managed_endpoint(
    *,
    layout: str,
    model_dir: Path,
    model_uri: str,
    model_name: str,
    records: list[list[dict[str, Any]]],
    out: Path,
    ml_client: Any = None,
    environ: Mapping[str, str] | None = None,
    name: str | None = None,
) -> tuple[list[float], dict[str, Any]]:
    """Probabilities for every batch of `records`, and a summary of what was done."""
    env = os.environ if environ is None else environ
    client = ml_client or ml_client_from_env(env)
    endpoint = name or endpoint_name()
    model = _register(client, layout, model_uri, model_name, endpoint)
    probabilities: list[float] = []
    problem = None
    try:
        _create(client, layout, endpoint, model, model_dir, env)
        for index, batch in enumerate(records):
            probabilities.extend(_score(client, endpoint, batch, index, out))
    except Exception as exc:  # noqa: BLE001 - reported below with the teardown
        problem = str(exc) if isinstance(exc, ManagedVerifyError) else _one_line(exc)
    torn_down, teardown = _delete(client, endpoint)
    if problem is not None or not torn_down:
        raise ManagedVerifyError(
            "; ".join(p for p in (problem, teardown) if p) + "; the champion was not touched"
        )
    return probabilities, {
        "endpoint_name": endpoint,
        "deployment": DEPLOYMENT,
        "registered_model": f"{model.name}:{model.version}",
        "traffic": {},
        "torn_down": torn_down,
    }


def _register(client: Any, layout: str, model_uri: str, model_name: str, endpoint: str) -> Any:
    from azure.ai.ml.entities import Model

    model = Model(
        name=f"{model_name}-verify",
        path=model_uri,
        type="mlflow_model" if layout == "mlflow" else "custom_model",
        description="Submitted for verification; not a champion.",
        tags={"aml_trigger.verification": endpoint},
    )
    try:
        return client.models.create_or_update(model)
    except Exception as exc:  # noqa: BLE001 - the step fails with the reason
        raise ManagedVerifyError(
            f"registering the submitted model failed: {_one_line(exc)}"
        ) from None


def _create(
    client: Any, layout: str, endpoint: str, model: Any, model_dir: Path, env: Mapping[str, str]
) -> None:
    from azure.ai.ml.entities import (
        CodeConfiguration,
        Environment,
        ManagedOnlineDeployment,
        ManagedOnlineEndpoint,
    )

    client.online_endpoints.begin_create_or_update(
        ManagedOnlineEndpoint(
            name=endpoint, auth_mode="key", tags={"aml_trigger.verification": "throw-away"}
        )
    ).result()
    with tempfile.TemporaryDirectory(prefix="aml-trigger-verify-") as tmp:
        if layout == "mlflow":
            code = CodeConfiguration(
                code=str(_code_snapshot(Path(tmp))), scoring_script="steps/verify_mlflow_score.py"
            )
            environment: Any = env.get("AML_DEPLOY_ENVIRONMENT") or DEFAULT_ENVIRONMENT
        else:
            code = CodeConfiguration(code=str(model_dir), scoring_script="score.py")
            conda = next((model_dir / n for n in _CONDA_FILES if (model_dir / n).is_file()), None)
            environment = (
                Environment(
                    image="mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest",
                    conda_file=str(conda),
                )
                if conda
                else env.get("AML_DEPLOY_ENVIRONMENT") or DEFAULT_ENVIRONMENT
            )
        deployment = ManagedOnlineDeployment(
            name=DEPLOYMENT,
            endpoint_name=endpoint,
            model=model.id,
            code_configuration=code,
            environment=environment,
            instance_type=env.get("AML_INSTANCE_TYPE") or DEFAULT_INSTANCE_TYPE,
            instance_count=1,
        )
        try:
            client.online_deployments.begin_create_or_update(deployment).result()
        except Exception as exc:  # noqa: BLE001 - the step fails with the reason
            raise ManagedVerifyError(
                f"deployment {DEPLOYMENT} on endpoint {endpoint} failed: {_one_line(exc)}"
            ) from None


def _score(client: Any, endpoint: str, batch: list[dict], index: int, out: Path) -> list[float]:
    request = out / f"request_{index}.json"
    request.write_text(json.dumps({"data": batch}, default=str), encoding="utf-8")
    try:
        answer = client.online_endpoints.invoke(
            endpoint_name=endpoint, deployment_name=DEPLOYMENT, request_file=str(request)
        )
    finally:
        request.unlink(missing_ok=True)
    first = index * BATCH_ROWS + 1
    problem = check_predictions(answer, len(batch))
    if problem:
        raise ManagedVerifyError(f"rows {first}-{first + len(batch) - 1}: {problem}")
    parsed = json.loads(answer) if isinstance(answer, str | bytes) else answer
    if isinstance(parsed, str):
        parsed = json.loads(parsed)
    return [float(p) for p in parsed["probabilities"]]


def _delete(client: Any, endpoint: str) -> tuple[bool, str | None]:
    try:
        client.online_endpoints.begin_delete(name=endpoint).result()
    except Exception as exc:  # noqa: BLE001 - reported in the step's error
        if getattr(exc, "status_code", None) == 404:
            return True, None  # never created
        return False, f"deleting endpoint {endpoint} failed ({_one_line(exc)}; delete it by hand)"
    return True, None
