"""Publishing the YAML in pipeline/: first time creates, unchanged is a no-op."""

from __future__ import annotations

import pytest
from azure.ai.ml import load_component

from pipeline.publish import PIPELINE_YAML, publish, publish_version
from pipeline.settings import Settings
from tests.azure.conftest import Registry

NODES = [
    "prep", "check_drift", "train", "train_1", "train_2", "train_3", "score_champion",
    "select_best", "evaluate", "register", "deploy", "smoke_test",
]  # fmt: skip
# Each command component is registered once; the train slots share aml_trigger_train.
COMPONENTS = [n for n in NODES if not n.startswith("train_")]


def test_every_component_and_the_pipeline_load_with_the_sdk():
    pipeline = load_component(PIPELINE_YAML)
    assert pipeline.name == "aml_trigger_training"
    assert list(pipeline.jobs) == NODES
    for node in pipeline.jobs.values():
        assert node.component.type == "command"
        assert node.component.code == "../.."


def _publish(fake_azure, fake_credential):
    return publish(
        Settings.from_env(),
        credential=fake_credential,
        transport=fake_azure,
        retry_total=0,
        progress=lambda _: None,
    )


def test_first_publish_creates_environment_components_and_pipeline(
    aml_env, fake_azure, fake_credential, workspace, wire
):
    result = _publish(fake_azure, fake_credential)

    version = publish_version()
    puts = fake_azure.requests("PUT")
    assert [p.path.split("/workspaces/ws-ml/")[1] for p in puts] == [
        f"environments/aml-trigger-steps/versions/{version}",
        *[f"components/aml_trigger_{n}/versions/{version}" for n in COMPONENTS],
        f"components/aml_trigger_training/versions/{version}",
    ]
    env = puts[0].json()["properties"]
    assert env["image"].startswith("mcr.microsoft.com/azureml/")
    assert "lightgbm==4.7.0" in env["condaFile"]
    for put in puts[1:-1]:
        spec = put.json()["properties"]["componentSpec"]
        assert spec["environment"].endswith(f"/environments/aml-trigger-steps/versions/{version}")
        assert spec["code"] == f"azureml:{workspace}"  # one snapshot, found by its hash
    pipeline_spec = puts[-1].json()["properties"]["componentSpec"]
    for node, job in pipeline_spec["jobs"].items():
        component = "train" if node.startswith("train_") else node
        assert job["componentId"].endswith(
            f"/components/aml_trigger_{component}/versions/{version}"
        )
    assert result.pipeline_component == f"aml_trigger_training:{version}"
    assert len(result.created) == 11  # the environment, 9 components, the pipeline
    assert not fake_azure.unrouted, [u.url for u in fake_azure.unrouted]


def test_publishing_unchanged_code_again_creates_nothing(
    aml_env, fake_azure, fake_credential, workspace
):
    first = _publish(fake_azure, fake_credential)
    before = len(fake_azure.requests("PUT"))

    again = _publish(fake_azure, fake_credential)

    assert len(fake_azure.requests("PUT")) == before
    assert again.created == []
    assert again.version == first.version
    assert again.pipeline_component == first.pipeline_component


def test_the_version_follows_the_step_code_and_yaml(tmp_path):
    from pipeline.publish import content_hash

    for rel in ("steps", "pipeline/components", "pipeline/environment"):
        (tmp_path / rel).mkdir(parents=True)
    (tmp_path / "pipeline/training_pipeline.yaml").write_text("type: pipeline\n")
    (tmp_path / "steps/prep.py").write_text("A = 1\n")
    first = content_hash(tmp_path)
    (tmp_path / "steps/__pycache__").mkdir()
    (tmp_path / "steps/__pycache__/prep.cpython-311.pyc").write_bytes(b"x")
    (tmp_path / "README.md").write_text("docs change nothing\n")
    assert content_hash(tmp_path) == first
    (tmp_path / "steps/prep.py").write_text("A = 2\n")
    assert content_hash(tmp_path) != first


def test_publish_needs_only_the_workspace_settings(home, fake_azure):
    from pipeline.submitter import SubmissionError

    with pytest.raises(SubmissionError) as caught:
        publish(Settings.from_env({"AML_WORKSPACE": "w"}), transport=fake_azure)
    assert "AML_SUBSCRIPTION_ID, AML_RESOURCE_GROUP" in caught.value.message
    assert "AML_PIPELINE_COMPONENT" not in caught.value.message
    assert fake_azure.sent == []


@pytest.mark.azurite
def test_first_publish_uploads_the_step_code_once_to_blob_storage(
    aml_env, fake_azure, fake_credential, wire, azurite
):
    """The code snapshot really goes to blob storage: the workspace hands out a SAS
    for a temporary blob reference (here a container in Azurite)."""
    from datetime import UTC, datetime, timedelta

    from azure.storage.blob import (
        BlobServiceClient,
        ContainerSasPermissions,
        generate_container_sas,
    )

    service = BlobServiceClient.from_connection_string(azurite)
    container = service.create_container(f"azureml-blobstore-{datetime.now(UTC):%H%M%S%f}")
    sas = generate_container_sas(
        service.account_name,
        container.container_name,
        account_key=service.credential.account_key,
        permission=ContainerSasPermissions(read=True, write=True, create=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    container_url = container.url
    registry = Registry()
    fake_azure.on("GET", r"/(environments|components|codes)/[^/]+/versions/[^/?]+\?", registry.get)
    fake_azure.on("PUT", r"/(environments|components|codes)/[^/]+/versions/", registry.put)
    fake_azure.on("GET", r"/codes/[^/]+/versions\?", (200, {"value": []}))  # nothing by hash
    fake_azure.on(
        "POST",
        r"/codes/[^/]+/versions/[^/]+/startPendingUpload\?",
        (
            200,
            {
                "blobReferenceForConsumption": {
                    "blobUri": container_url,
                    "credential": {"credentialType": "SAS", "sasUri": f"{container_url}?{sas}"},
                },
                "pendingUploadType": "TemporaryBlobReference",
            },
        ),
    )
    fake_azure.on(
        "GET",
        rf"/workspaces/{wire.WS}\?",
        (200, {"id": wire.WS_PATH, "name": wire.WS, "location": "westeurope", "properties": {}}),
    )

    _publish(fake_azure, fake_credential)

    uploaded = sorted(b.name for b in container.list_blobs())
    assert any(name.endswith("steps/score.py") for name in uploaded), uploaded
    assert not any("/tests/" in name or ".venv" in name for name in uploaded)
    assert len(fake_azure.requests("POST", "startPendingUpload")) == 1  # once, not per step
    code_puts = fake_azure.requests("PUT", "/codes/")
    assert len(code_puts) == 1
    for put in fake_azure.requests("PUT", "/components/")[:-1]:
        assert put.json()["properties"]["componentSpec"]["code"].endswith(
            code_puts[0].path.split("/workspaces/ws-ml")[1]
        )
