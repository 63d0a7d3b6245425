"""The identity a step authenticates as, chosen from what Azure ML puts in the job.

A bare DefaultAzureCredential picks none of Azure ML's identities reliably: it reads
AZURE_CLIENT_ID, while Azure ML names the compute's user-assigned identity in
DEFAULT_IDENTITY_CLIENT_ID (azureml-examples, setup/setup-ci/security-scanner/
amlsecscan.py passes it as `clientid` to the compute's MSI endpoint), and a job
submitted with `identity: user_identity` is served tokens for the submitter only
through AzureMLOnBehalfOfCredential (azure.ai.ml.identity; azureml-examples
cli/jobs/single-step/on-behalf-of). So, in order:

1. `OBO_ENDPOINT` set (the job runs as the user): AzureMLOnBehalfOfCredential, which
   reads exactly that variable (azure/ai/ml/identity/_credentials/aml_on_behalf_of.py).
2. `MSI_ENDPOINT` and `MSI_SECRET` set (Azure ML compute with a managed identity):
   ManagedIdentityCredential, with client_id=DEFAULT_IDENTITY_CLIENT_ID when the
   compute names a user-assigned identity (azure-identity then asks the Azure ML
   MSI endpoint with `clientid`, azure/identity/_credentials/azure_ml.py).
3. Anywhere else (a laptop, CI): DefaultAzureCredential without the browser prompt.

The workspace comes from AZUREML_ARM_SUBSCRIPTION / _RESOURCEGROUP /
_WORKSPACE_NAME, which Azure ML sets in every job (steps/online_endpoint.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

IdentityKind = Literal["on_behalf_of", "compute_identity", "default"]


def identity_kind(environ: Mapping[str, str]) -> tuple[IdentityKind, str | None]:
    """Which identity the job provides, and the user-assigned client id if named."""
    if environ.get("OBO_ENDPOINT"):
        return "on_behalf_of", None
    if environ.get("MSI_ENDPOINT") and environ.get("MSI_SECRET"):
        return "compute_identity", environ.get("DEFAULT_IDENTITY_CLIENT_ID") or None
    return "default", None


def job_credential(environ: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
    """An azure-identity credential for the identity the job provides. `kwargs` go to
    the credential (e.g. `transport=` in tests)."""
    kind, client_id = identity_kind(os.environ if environ is None else environ)
    if kind == "on_behalf_of":
        from azure.ai.ml.identity import AzureMLOnBehalfOfCredential

        return AzureMLOnBehalfOfCredential(**kwargs)
    if kind == "compute_identity":
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=client_id, **kwargs)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(exclude_interactive_browser_credential=True, **kwargs)
