"""Compute clusters the pipeline runs on, created or updated from one small config.

`aml-trigger compute ensure CONFIG` reads a YAML or JSON file such as

    clusters:
      - name: cpu-prep
        vm_size: Standard_DS3_v2
        max_nodes: 2
        tier: low_priority
      - name: cpu-train
        vm_size: Standard_F16s_v2
        min_nodes: 0
        max_nodes: 4
        idle_time_before_scale_down: 300
        identity: system_assigned

and brings each AmlCompute cluster of the workspace to it: absent ones are created,
ones whose scale settings or identity differ are updated, others are left alone,
so running it twice changes nothing (like `publish`). The plan is pure (`plan`);
only `ensure_clusters` talks to Azure ML.

Azure ML does not change a cluster's VM size or priority after creation (the studio
says the VM type "can't be changed after creation", and the REST Compute - Update
body, ClusterUpdateParameters, carries scaleSettings only), so such a difference
is reported as a refusal naming the field, never sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.aml_client import WORKSPACE_SETTINGS, build_ml_client, to_submission_error
from pipeline.settings import Settings

Tier = Literal["low_priority", "dedicated"]
_IDENTITY_ARM = (
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
    r"Microsoft\.ManagedIdentity/userAssignedIdentities/[^/]+$"
)


class ClusterConfigError(ValueError):
    """The cluster config is unreadable or invalid; the message names each field."""


class ClusterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(
        ...,
        # Azure ML: 3-24 characters, letters, digits and '-', starting with a letter
        # (how-to-create-attach-compute-cluster, "Compute name").
        pattern=r"^[A-Za-z][A-Za-z0-9-]{2,23}$",
        description="Cluster name: 3-24 letters, digits or '-', starting with a letter.",
    )
    vm_size: str = Field(
        ...,
        pattern=r"^Standard_[A-Za-z0-9_]{1,60}$",
        description="VM size of every node, e.g. Standard_DS3_v2. Fixed once created.",
    )
    min_nodes: int = Field(0, ge=0, le=1000, description="Nodes kept when idle; 0 scales to zero.")
    max_nodes: int = Field(..., ge=1, le=1000, description="Most nodes the cluster scales to.")
    idle_time_before_scale_down: int = Field(
        120,
        ge=0,
        le=86_400 * 7,
        description="Seconds a node stays idle before the cluster scales down.",
    )
    tier: Tier = Field(
        "dedicated",
        description="`low_priority` (cheaper, may be preempted) or `dedicated`. Fixed once "
        "created.",
    )
    identity: str | None = Field(
        None,
        description="`system_assigned`, or the ARM id of a user-assigned managed identity; "
        "none: the cluster has no identity of its own.",
    )

    @field_validator("name")
    @classmethod
    def _dash_then_letter(cls, value: str) -> str:
        # Azure ML: "If '-' is used, it needs to be followed by at least one letter later".
        if "-" in value and not any(c.isalpha() for c in value[value.rfind("-") :]):
            raise ValueError(f"name {value!r}: a '-' must be followed by a letter later on")
        return value

    @field_validator("identity")
    @classmethod
    def _identity_shape(cls, value: str | None) -> str | None:
        import re

        if value is None or value == "system_assigned" or re.fullmatch(_IDENTITY_ARM, value):
            return value
        raise ValueError(
            f"identity {value!r}: accepted: `system_assigned` or a user-assigned identity's "
            "ARM id (/subscriptions/.../providers/Microsoft.ManagedIdentity/"
            "userAssignedIdentities/NAME)"
        )

    @model_validator(mode="after")
    def _min_within_max(self) -> ClusterSpec:
        if self.min_nodes > self.max_nodes:
            raise ValueError(
                f"min_nodes {self.min_nodes} is above max_nodes {self.max_nodes}; "
                "min_nodes must be 0..max_nodes"
            )
        return self


class ClusterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    clusters: list[ClusterSpec] = Field(..., min_length=1, max_length=16)

    @field_validator("clusters")
    @classmethod
    def _distinct(cls, value: list[ClusterSpec]) -> list[ClusterSpec]:
        names = [c.name.lower() for c in value]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"cluster {name!r} is listed twice")
        return value


def load_cluster_config(path: Path | str) -> ClusterConfig:
    """The config at `path` (YAML, of which JSON is a subset), or ClusterConfigError."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ClusterConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ClusterConfigError(f"{path}: neither YAML nor JSON: {exc}") from None
    try:
        # Through JSON so strict mode sees the types a JSON body would have.
        return ClusterConfig.model_validate_json(json.dumps(doc))
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()
        ]
        raise ClusterConfigError(f"{path}: " + "; ".join(problems)) from None


# --- what exists, and what to do about it (pure) ---------------------------------------
@dataclass(frozen=True)
class ObservedCluster:
    """The fields of an existing cluster that a spec decides."""

    vm_size: str
    tier: str
    min_nodes: int
    max_nodes: int
    idle_time_before_scale_down: int
    identity: str | None


@dataclass(frozen=True)
class ClusterChange:
    name: str
    action: Literal["create", "update", "unchanged", "refused"]
    changes: list[str] = field(default_factory=list)

    def line(self) -> str:
        detail = f": {'; '.join(self.changes)}" if self.changes else ""
        verb = {"create": "create", "update": "update", "unchanged": "exists, unchanged",
                "refused": "REFUSED"}[self.action]  # fmt: skip
        return f"{self.name}: {verb}{detail}"


_IMMUTABLE = ("vm_size", "tier")
_MUTABLE = ("min_nodes", "max_nodes", "idle_time_before_scale_down", "identity")


def plan(spec: ClusterSpec, found: ObservedCluster | None) -> ClusterChange:
    if found is None:
        return ClusterChange(
            spec.name,
            "create",
            [f"{spec.vm_size}, {spec.tier}, {spec.min_nodes}-{spec.max_nodes} nodes, "
             f"idle {spec.idle_time_before_scale_down}s"],
        )  # fmt: skip
    fixed = [
        f"{name} is {getattr(found, name)!r}, config says {getattr(spec, name)!r} (fixed "
        "once created: delete the cluster or give the config a new name)"
        for name in _IMMUTABLE
        if str(getattr(found, name)).lower() != str(getattr(spec, name)).lower()
    ]
    if fixed:
        return ClusterChange(spec.name, "refused", fixed)
    changes = [
        f"{name} {getattr(found, name)!r} -> {getattr(spec, name)!r}"
        for name in _MUTABLE
        if _norm(getattr(found, name)) != _norm(getattr(spec, name))
    ]
    return ClusterChange(spec.name, "update" if changes else "unchanged", changes)


def _norm(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


# --- Azure ML ---------------------------------------------------------------------------
def observe(compute: Any) -> ObservedCluster:
    """An SDK AmlCompute as the fields a spec decides."""
    identity = getattr(compute, "identity", None)
    kind = str(getattr(identity, "type", "") or "").lower()
    named = None
    if "user" in kind:
        ids = getattr(identity, "user_assigned_identities", None) or []
        named = getattr(ids[0], "resource_id", None) if ids else None
    elif "system" in kind:
        named = "system_assigned"
    return ObservedCluster(
        vm_size=str(compute.size or ""),
        tier=str(compute.tier or "dedicated").lower().replace("lowpriority", "low_priority"),
        min_nodes=int(compute.min_instances or 0),
        max_nodes=int(compute.max_instances or 0),
        idle_time_before_scale_down=int(compute.idle_time_before_scale_down or 0),
        identity=named,
    )


def to_aml_compute(spec: ClusterSpec) -> Any:
    from azure.ai.ml.entities import (
        AmlCompute,
        IdentityConfiguration,
        ManagedIdentityConfiguration,
    )

    identity = None
    if spec.identity == "system_assigned":
        identity = IdentityConfiguration(type="system_assigned")
    elif spec.identity:
        identity = IdentityConfiguration(
            type="user_assigned",
            user_assigned_identities=[ManagedIdentityConfiguration(resource_id=spec.identity)],
        )
    return AmlCompute(
        name=spec.name,
        size=spec.vm_size,
        min_instances=spec.min_nodes,
        max_instances=spec.max_nodes,
        idle_time_before_scale_down=spec.idle_time_before_scale_down,
        tier=spec.tier,
        identity=identity,
    )


def ensure_clusters(
    settings: Settings,
    config: ClusterConfig,
    *,
    dry_run: bool = False,
    ml_client: Any = None,
    progress: Callable[[str], None] | None = None,
    **client_kwargs: Any,
) -> list[ClusterChange]:
    """Read each cluster (GET), then create or update what differs, one at a time,
    waiting for each to be provisioned. `dry_run` reads and plans only."""
    say = progress or (lambda _m: None)
    client = ml_client or build_ml_client(settings, required=WORKSPACE_SETTINGS, **client_kwargs)
    workspace = settings.aml_workspace
    changes = []
    for spec in config.clusters:
        found = _existing(client, spec.name, workspace)
        if found is not None and str(getattr(found, "type", "amlcompute")).lower() != "amlcompute":
            change = ClusterChange(
                spec.name,
                "refused",
                [f"a {found.type} compute has this name; choose another cluster name"],
            )
        else:
            change = plan(spec, observe(found) if found is not None else None)
        changes.append(change)
        say(change.line())
        if dry_run or change.action not in {"create", "update"}:
            continue
        try:
            client.compute.begin_create_or_update(to_aml_compute(spec)).result()
        except Exception as exc:  # noqa: BLE001 - mapped
            raise to_submission_error(
                exc, action=f"{change.action} cluster {spec.name}", workspace=workspace
            ) from None
    return changes


def _existing(client: Any, name: str, workspace: str | None) -> Any:
    try:
        return client.compute.get(name)
    except Exception as exc:  # noqa: BLE001 - only 404 means "absent"
        if getattr(exc, "status_code", None) == 404:
            return None
        raise to_submission_error(
            exc, action=f"reading cluster {name}", workspace=workspace
        ) from None
