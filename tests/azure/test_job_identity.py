"""Inside a job a step authenticates as Azure ML provides: the compute's identity
(DEFAULT_IDENTITY_CLIENT_ID names a user-assigned one) or the submitter's on behalf
of, each asked for its token at the endpoint the job's environment names."""

from __future__ import annotations

import time

import pytest

from steps.job_identity import identity_kind, job_credential

MSI = "http://127.0.0.1:46808/MSI/auth"
OBO = "http://127.0.0.1:46809/OBO/token"
CLIENT_ID = "5b3c1a7e-0000-4000-8000-000000000abc"
SCOPE = "https://management.azure.com/.default"


def _token(sent):
    expires = int(time.time()) + 3600
    return (200, {"access_token": "tok", "expires_on": expires, "token_type": "Bearer"})


@pytest.fixture
def job_env(monkeypatch):
    for name in ("OBO_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET", "DEFAULT_IDENTITY_CLIENT_ID",
                 "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "AZURE_CLIENT_ID"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)

    def set_env(**values: str) -> dict[str, str]:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        return values

    return set_env


def test_compute_identity_asks_for_the_user_assigned_client_id(job_env, fake_azure):
    job_env(MSI_ENDPOINT=MSI, MSI_SECRET="msi-secret", DEFAULT_IDENTITY_CLIENT_ID=CLIENT_ID)
    fake_azure.on("GET", r"/MSI/auth\?", _token)

    credential = job_credential(transport=fake_azure)
    assert credential.get_token(SCOPE).token == "tok"

    (sent,) = fake_azure.requests("GET")
    assert sent.url.startswith(MSI)
    assert f"clientid={CLIENT_ID}" in sent.url
    assert "resource=https://management.azure.com" in sent.url
    assert sent.headers["secret"] == "msi-secret"


def test_compute_system_identity_sends_no_client_id(job_env, fake_azure):
    job_env(MSI_ENDPOINT=MSI, MSI_SECRET="msi-secret")
    fake_azure.on("GET", r"/MSI/auth\?", _token)

    job_credential(transport=fake_azure).get_token(SCOPE)

    assert "clientid" not in fake_azure.requests("GET")[0].url


def test_a_job_run_as_the_user_gets_tokens_on_behalf_of_the_submitter(job_env, fake_azure):
    # OBO_ENDPOINT wins over the compute identity: `identity: user_identity` was asked for.
    job_env(OBO_ENDPOINT=OBO, MSI_ENDPOINT=MSI, MSI_SECRET="s", DEFAULT_IDENTITY_CLIENT_ID="x")
    fake_azure.on("GET", r"/OBO/token\?", _token)

    from azure.ai.ml.identity import AzureMLOnBehalfOfCredential

    credential = job_credential(transport=fake_azure)
    assert isinstance(credential, AzureMLOnBehalfOfCredential)
    assert credential.get_token(SCOPE).token == "tok"
    (sent,) = fake_azure.requests("GET")
    assert sent.url.startswith(OBO) and "resource=https://management.azure.com" in sent.url
    assert not fake_azure.requests("GET", "/MSI/")


def test_off_azure_ml_the_default_chain_is_used(job_env):
    assert identity_kind({}) == ("default", None)
    assert identity_kind({"MSI_ENDPOINT": MSI}) == ("default", None)  # no secret: not a job
    assert identity_kind({"MSI_ENDPOINT": MSI, "MSI_SECRET": "s"}) == ("compute_identity", None)


def test_the_deploy_step_builds_its_client_with_the_job_identity(job_env, fake_azure, wire):
    from steps.online_endpoint import ml_client_from_env

    env = job_env(
        MSI_ENDPOINT=MSI,
        MSI_SECRET="msi-secret",
        DEFAULT_IDENTITY_CLIENT_ID=CLIENT_ID,
        AZUREML_ARM_SUBSCRIPTION=wire.SUB,
        AZUREML_ARM_RESOURCEGROUP=wire.RG,
        AZUREML_ARM_WORKSPACE_NAME=wire.WS,
    )
    client = ml_client_from_env(env)

    from azure.identity import ManagedIdentityCredential

    credential = client._credential
    assert isinstance(credential, ManagedIdentityCredential)
    assert client.workspace_name == wire.WS and client.subscription_id == wire.SUB
