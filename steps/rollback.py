"""Which deployments an endpoint keeps after a promotion: pure decisions, no I/O.

A promotion keeps two deployments: the new one (all traffic) and the one that
served before it, at 0 %, so a rollback is a traffic shift rather than a redeploy.
Older deployments this pipeline created are deleted: a managed online endpoint
holds at most 20 deployments, and each bills its instances until deleted
(Microsoft Learn, "Manage and increase quotas for resources with Azure Machine
Learning": deployments per endpoint 20). Deployments someone else made on the
endpoint (without our tag) are never touched.
"""

from __future__ import annotations

from collections.abc import Mapping

OWNER_TAG = "aml_trigger.model"  # set on every deployment deploy_online creates
MAX_DEPLOYMENTS_PER_ENDPOINT = 20


def rollback_target(traffic_before: Mapping[str, int], new: str) -> str | None:
    """The deployment that served most traffic before `new` took it all (the one to
    roll back to); None when nothing served."""
    serving = {name: share for name, share in traffic_before.items() if share and name != new}
    if not serving:
        return None
    return max(sorted(serving), key=lambda name: serving[name])


def retired(
    deployments: Mapping[str, Mapping[str, str]], *, live: str, rollback: str | None
) -> list[str]:
    """Our deployments (name -> tags) other than the live one and the rollback one."""
    keep = {live, rollback}
    return sorted(
        name for name, tags in deployments.items() if OWNER_TAG in (tags or {}) and name not in keep
    )
