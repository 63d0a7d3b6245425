"""Publish the pipeline to an Azure ML workspace: the step environment, every
command component, and the pipeline component, all from the YAML in pipeline/.

Everything published together gets one version, `<release>-<content hash>`, where
the hash covers the YAML, the environment and the step code. Publishing unchanged
code is therefore a no-op: each asset's version is read first (GET) and created only
on 404. The git sha is not in the version on purpose: a commit that touches only
docs or the Functions app would otherwise republish an identical pipeline.

The command components are registered with the registered environment (not the
inline image + conda file, which would register one anonymous environment each) and
share one code snapshot, uploaded once; the pipeline component's nodes then point at
the registered component versions.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.aml_client import WORKSPACE_SETTINGS, build_ml_client, to_submission_error
from pipeline.settings import Settings

_log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
PIPELINE_DIR = Path(__file__).resolve().parent
PIPELINE_YAML = PIPELINE_DIR / "training_pipeline.yaml"
# Batch scoring (steps/batch_score.py): published beside the training pipeline by
# `aml-trigger publish`; its jobs are submitted with `aml-trigger score --azure`.
BATCH_PIPELINE_YAML = PIPELINE_DIR / "batch_scoring_pipeline.yaml"
# Model verification (pipeline/aml_verification.py): POST /api/verifications on aml.
VERIFY_PIPELINE_YAML = PIPELINE_DIR / "verify_model_pipeline.yaml"
ENVIRONMENT_YAML = PIPELINE_DIR / "environment" / "environment.yaml"

# What decides whether the published pipeline differs: its definition and the code
# the steps run. Paths are relative to the repo root.
_HASHED = (
    "pipeline/training_pipeline.yaml",
    "pipeline/batch_scoring_pipeline.yaml",
    "pipeline/verify_model_pipeline.yaml",
    "pipeline/components",
    "pipeline/environment",
)
_HASHED_CODE = ("steps",)


@dataclass
class Published:
    kind: str  # environment, component, pipeline component
    name: str
    version: str
    created: bool
    id: str | None = None


@dataclass
class PublishResult:
    version: str
    assets: list[Published] = field(default_factory=list)

    @property
    def pipeline_component(self) -> str:
        """The AML_PIPELINE_COMPONENT value a trigger submits (the training pipeline,
        published first; extra pipelines such as batch scoring follow it)."""
        first = next(a for a in self.assets if a.kind == "pipeline component")
        return f"{first.name}:{first.version}"

    @property
    def created(self) -> list[Published]:
        return [a for a in self.assets if a.created]


def content_hash(root: Path = REPO_ROOT) -> str:
    """sha256 over the pipeline YAML, environment and step code (path + bytes)."""
    digest = hashlib.sha256()
    files: list[Path] = []
    for rel in _HASHED:
        path = root / rel
        files.extend(
            [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        )
    for rel in _HASHED_CODE:
        files.extend(sorted(p for p in (root / rel).rglob("*") if p.is_file()))
    for path in files:
        if "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def publish_version(root: Path = REPO_ROOT) -> str:
    return f"{_release()}-{content_hash(root)[:12]}"


def publish(
    settings: Settings,
    *,
    ml_client: Any = None,
    credential: Any = None,
    transport: Any = None,
    pipeline_yaml: Path = PIPELINE_YAML,
    extra_pipelines: Sequence[Path] = (),
    environment_yaml: Path = ENVIRONMENT_YAML,
    root: Path = REPO_ROOT,
    progress: Callable[[str], None] | None = None,
    **client_kwargs: Any,
) -> PublishResult:
    """Register what is missing; return every asset with whether it was created.
    `extra_pipelines` (e.g. BATCH_PIPELINE_YAML) share the environment, the code
    snapshot and any command component the training pipeline already registered."""
    from azure.ai.ml import load_component, load_environment

    say = progress or _log.info
    client = ml_client or build_ml_client(
        settings,
        credential=credential,
        transport=transport,
        required=WORKSPACE_SETTINGS,
        **client_kwargs,
    )
    version = publish_version(root)
    result = PublishResult(version=version)
    workspace = settings.aml_workspace

    def ensure(kind: str, operations: Any, entity: Any) -> Any:
        try:
            found = operations.get(name=entity.name, version=version)
            result.assets.append(Published(kind, entity.name, version, False, found.id))
            say(f"{kind} {entity.name}:{version} already published")
            return found
        except Exception as exc:  # noqa: BLE001 - only 404 means "create"
            if getattr(exc, "status_code", None) != 404:
                raise to_submission_error(
                    exc, action=f"reading {kind} {entity.name}", workspace=workspace
                ) from None
        entity.version = version
        say(f"{kind} {entity.name}:{version}: creating")
        try:
            created = operations.create_or_update(entity)
        except Exception as exc:  # noqa: BLE001 - mapped
            raise to_submission_error(
                exc, action=f"creating {kind} {entity.name}", workspace=workspace
            ) from None
        result.assets.append(Published(kind, entity.name, version, True, created.id))
        return created

    environment = load_environment(environment_yaml)
    environment.version = version
    ensure("environment", client.environments, environment)
    environment_ref = f"azureml:{environment.name}:{version}"

    registered: dict[Path, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        code: str | Path = code_snapshot(root, Path(tmp) / "code")
        for source_yaml in (pipeline_yaml, *extra_pipelines):
            doc = yaml.safe_load(Path(source_yaml).read_text(encoding="utf-8"))
            for node in doc["jobs"].values():
                source = (Path(source_yaml).parent / node["component"]).resolve()
                if source not in registered:
                    component = load_component(source)
                    component.environment = environment_ref
                    # One code snapshot for all steps: uploaded with the first component
                    # (or found by its hash), then referenced by id.
                    component.code = str(code)
                    done = ensure("component", client.components, component)
                    code = _code_id(done) or code
                    registered[source] = f"azureml:{component.name}:{version}"
                node["component"] = registered[source]
            # The nodes now name registered components, so the YAML no longer needs its
            # folder; the SDK reads it from a copy.
            resolved = Path(tmp) / Path(source_yaml).name
            resolved.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
            pipeline = load_component(resolved)
            ensure("pipeline component", client.components, pipeline)
    return result


def code_snapshot(root: Path, dest: Path) -> Path:
    """The code the steps run (steps/, nothing else), copied to `dest`. Azure ML
    hashes and uploads the folder it is given; the repo itself holds .venv and
    node_modules, which take the SDK seconds to walk even when ignored."""
    for rel in _HASHED_CODE:
        shutil.copytree(
            root / rel, dest / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    return dest


def _code_id(component: Any) -> str | None:
    code = getattr(component, "code", None)
    if isinstance(code, str) and "/codes/" in code:
        return code.removeprefix("azureml:")
    return None


def _release() -> str:
    try:
        from importlib.metadata import version

        return version("aml-trigger")
    except Exception:  # noqa: BLE001 - not installed: no release number
        return "0"
