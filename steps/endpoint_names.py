"""Online endpoint names: Azure ML's rule, and a default that two users do not share.

An online endpoint's name is the host name of its scoring URI
(`https://<name>.<region>.inference.ml.azure.com/score`), so it must be unique in
the Azure region, not just in the workspace: two workspaces in one region that
both deploy to `porto-seguro` collide, and the second deploy fails. The rule is
Microsoft Learn's ("Deploy and score a machine learning model by using an online
endpoint": the name begins with a letter, is 3-32 characters, letters, digits and
hyphens) together with azure-ai-ml's own check
(azure/ai/ml/constants/_endpoint.py, EndpointConfigurations.NAME_REGEX_PATTERN
`^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`: it also ends with a letter or digit).

Pure functions: used by the trigger (requests, settings) before anything is
submitted, and by the deploy step before it touches Azure.
"""

from __future__ import annotations

import hashlib
import re

BASE_NAME = "porto-seguro"
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$"
RULE = (
    "3-32 characters, letters, digits and hyphens, beginning with a letter and ending "
    "with a letter or digit (Azure ML online endpoint names, unique per Azure region)"
)


def check_endpoint_name(value: str, *, field: str = "endpoint_name") -> str:
    """The name, or ValueError naming the field, the value and the rule."""
    if not isinstance(value, str) or not re.fullmatch(NAME_PATTERN, value):
        length = len(value) if isinstance(value, str) else "?"
        raise ValueError(f"{field} {value!r} ({length} characters): accepted: {RULE}")
    return value


def default_endpoint_name(
    subscription_id: str | None, resource_group: str | None, workspace: str | None
) -> str:
    """`porto-seguro-<8 hex>` from the workspace's identity: stable for a workspace,
    different across workspaces (and so across users), 21 characters."""
    if not (subscription_id and resource_group and workspace):
        return BASE_NAME
    identity = f"{subscription_id}/{resource_group}/{workspace}".lower()
    return f"{BASE_NAME}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"
