"""The champion, recorded with what an Azure ML workspace's MLflow supports: tags on
model versions (Microsoft Learn, "Manage models registry in Azure Machine Learning
with MLflow": tags, get/search versions; no aliases, no model rename or delete).

Each promotion tags the promoted version `aml_trigger.promotion=<n>`, n one more than
any promotion so far; a rollback tags the failed version `aml_trigger.revoked`. The
champion is the unrevoked version with the highest promotion number (ties: the
higher version), so every reader derives exactly one champion from the same tags,
and rolling back is revoking: the previous promotion is the champion again.

The registry has no conditional write, so compare-and-set is check, write, re-read:
a promotion that finds the champion moved after its own write revokes itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

PROMOTION_TAG = "aml_trigger.promotion"
REVOKED_TAG = "aml_trigger.revoked"


@dataclass(frozen=True)
class Tagged:
    """A model version as far as the champion is concerned."""

    version: str
    tags: Mapping[str, str]

    @property
    def promotion(self) -> int | None:
        raw = self.tags.get(PROMOTION_TAG)
        return int(raw) if raw is not None and raw.isdigit() else None

    @property
    def revoked(self) -> bool:
        return REVOKED_TAG in self.tags


def champion_of(versions: Iterable[Tagged]) -> str | None:
    """The champion among these versions (pure: the rule every step applies)."""
    live = [v for v in versions if v.promotion is not None and not v.revoked]
    if not live:
        return None
    return max(live, key=lambda v: (v.promotion, int(v.version))).version


def next_promotion(versions: Iterable[Tagged]) -> int:
    """Revoked promotions count too: a number is never handed out twice."""
    return 1 + max((v.promotion or 0 for v in versions), default=0)


def should_shift(this_version: str, champion: str | None) -> bool:
    """May traffic move to `this_version`? Only while it is still the champion: a rival
    promotion can outrank ours after register reported "promoted" (two runs writing the
    same number; ties go to the higher version), and the endpoint must serve the champion."""
    return champion is not None and str(champion) == str(this_version)


class Superseded(Exception):
    """The version being deployed stopped being the champion before its traffic shift.
    `cleanup` says what was done with its new deployment (set by the endpoint code)."""

    def __init__(self, version: str, champion: str | None) -> None:
        self.version, self.champion, self.cleanup = str(version), champion, ""
        now = f"v{champion} is the champion now" if champion else "there is no champion now"
        super().__init__(f"v{version} is no longer the champion ({now})")


def check_still_champion(version: str, read_champion: Callable[[], str | None]) -> None:
    """Re-read the champion right before a traffic shift; raise Superseded if it moved."""
    champion = read_champion()
    if not should_shift(version, champion):
        raise Superseded(version, champion)


def versions_of(client: Any, model_name: str) -> list[Tagged]:
    """Every version of the model with its tags (none when the model does not exist).
    Searching by name is what the workspace supports; the tag rule is applied here."""
    quoted = model_name.replace("'", "\\'")
    found = client.search_model_versions(f"name='{quoted}'")
    return [Tagged(str(v.version), dict(v.tags or {})) for v in found]


def current_champion(client: Any, model_name: str) -> str | None:
    """The champion's version number, or None when the model has none (yet)."""
    return champion_of(versions_of(client, model_name))


def promote(client: Any, model_name: str, version: str, expected: str | None) -> str | None:
    """Make `version` the champion if the champion is still `expected`. Returns the
    champion found instead when it is not (another run promoted meanwhile), else None."""
    versions = versions_of(client, model_name)
    current = champion_of(versions)
    if current != expected:
        return current
    client.set_model_version_tag(model_name, version, PROMOTION_TAG, str(next_promotion(versions)))
    after = current_champion(client, model_name)
    if after != version:
        # Another promotion landed between our check and our write and outranks ours.
        client.set_model_version_tag(
            model_name, version, REVOKED_TAG, f"superseded by v{after} while promoting"
        )
        return after
    return None


def revoke(client: Any, model_name: str, version: str, reason: str) -> str | None:
    """Take `version`'s promotion back; returns the champion after (the previous one)."""
    client.set_model_version_tag(model_name, version, REVOKED_TAG, reason[:4000] or "revoked")
    return current_champion(client, model_name)


def model_version_uri(client: Any, model_name: str, version: str) -> str:
    """Where a version's files are, as a URI MLflow downloads directly. A version
    registered from `runs:/<run>/model` can answer with that runs:/ URI, and MLflow 3
    resolves runs:/ by searching logged models first (a call a workspace refuses), so
    it is turned into the run's own artifact location here."""
    uri = client.get_model_version_download_uri(model_name, version)
    return artifact_uri(client, uri) if uri.startswith("runs:/") else uri


def artifact_uri(client: Any, runs_uri: str) -> str:
    """runs:/<run>/<path> -> <the run's artifact root>/<path>."""
    run_id, _, path = runs_uri[len("runs:/") :].partition("/")
    root = client.get_run(run_id).info.artifact_uri.rstrip("/")
    return f"{root}/{path}" if path else root
