"""BlobStorage: the storage seam over Azure Blob Storage (or Azurite).

Only names, ETags and sizes travel through `list_blobs`/`get_blob`; content is
read only by `download_prefix`, which the local executor uses to stage data.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

from pipeline.storage import BlobInfo

# azure-storage-blob 12.31 speaks a newer REST version than Azurite 3.x accepts
# unless the emulator runs with --skipApiVersionCheck; the emulator gets this one.
EMULATOR_API_VERSION = "2021-12-02"


def is_emulator(connection_string: str) -> bool:
    text = connection_string.lower()
    return (
        text.startswith("usedevelopmentstorage=true")
        or "devstoreaccount1" in text
        or "127.0.0.1" in text
        or "localhost" in text
    )


def blob_service_client(connection_string: str, **options):
    """A BlobServiceClient for a connection string (Azurite gets an API version it
    knows); `options` go to the client (azure-core's `transport=`, for instance)."""
    from azure.storage.blob import BlobServiceClient

    if is_emulator(connection_string):
        options.setdefault("api_version", EMULATOR_API_VERSION)
    return BlobServiceClient.from_connection_string(connection_string, **options)


def account_service_client(settings, **options):
    """The BlobServiceClient of the account AzureWebJobsStorage names: its connection
    string, or by identity (AzureWebJobsStorage__accountName / __blobServiceUri, no
    key) with DefaultAzureCredential, which in Azure is the managed identity
    AzureWebJobsStorage__clientId names (a user-assigned one needs its client id)."""
    connection = settings.storage_connection.get_secret_value()
    if connection.strip():
        return blob_service_client(connection, **options)
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient(
        settings.storage_account_url, credential=_credential(settings.storage_client_id), **options
    )


@functools.cache
def _credential(client_id: str | None):
    """One credential per identity and process, so the state store and the storage
    seam share its token cache instead of each asking the identity endpoint."""
    from azure.identity import DefaultAzureCredential

    if client_id:
        return DefaultAzureCredential(managed_identity_client_id=client_id)
    return DefaultAzureCredential()


class BlobStorage:
    kind = "blob"

    def __init__(self, service) -> None:  # service: azure.storage.blob.BlobServiceClient
        self.service = service
        self._ensured: set[str] = set()

    @classmethod
    def from_connection_string(cls, connection_string: str) -> BlobStorage:
        return cls(blob_service_client(connection_string))

    def _container(self, container: str, *, create: bool = False):
        client = self.service.get_container_client(container)
        if create and container not in self._ensured:
            from azure.core.exceptions import ResourceExistsError

            try:
                client.create_container()
            except ResourceExistsError:
                pass
            self._ensured.add(container)
        return client

    def list_blobs(self, container: str, prefix: str = "") -> Iterator[BlobInfo]:
        from azure.core.exceptions import ResourceNotFoundError

        client = self._container(container)
        try:
            for props in client.list_blobs(name_starts_with=prefix or None):
                yield _info(container, props)
        except ResourceNotFoundError:
            return  # no container yet: nothing has arrived

    def walk(self, container: str, prefix: str = "") -> tuple[list[BlobInfo], list[str]]:
        """One level under `prefix`: its blobs, and its sub-folders (virtual, ending in
        '/'). Listing by folder costs one entry per sub-folder instead of one per
        blob below it, which is what lets a watcher skip folders it has finished."""
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.blob import BlobPrefix

        blobs: list[BlobInfo] = []
        folders: list[str] = []
        try:
            for item in self._container(container).walk_blobs(
                name_starts_with=prefix or None, delimiter="/"
            ):
                if isinstance(item, BlobPrefix):
                    folders.append(item.name)
                else:
                    blobs.append(_info(container, item))
        except ResourceNotFoundError:
            pass  # no container yet: nothing has arrived
        return blobs, folders

    def get_blob(self, container: str, name: str) -> BlobInfo | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            props = self._container(container).get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return _info(container, props)

    def put_blob(self, container: str, name: str, data: bytes) -> BlobInfo:
        client = self._container(container, create=True).get_blob_client(name)
        client.upload_blob(data, overwrite=True)
        return _info(container, client.get_blob_properties())

    def download_prefix(self, container: str, prefix: str, dest: Path) -> list[Path]:
        client = self._container(container)
        written = []
        for blob in self.list_blobs(container, prefix):
            rel = blob.name[len(prefix) :] if prefix else blob.name
            target = Path(dest) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as handle:
                client.get_blob_client(blob.name).download_blob().readinto(handle)
            written.append(target)
        return written

    def uri(self, container: str, name: str) -> str:
        return self._container(container).get_blob_client(name).url

    def blob_client(self, container: str, name: str):
        """The azure.storage.blob.BlobClient the Functions host binds for a blob trigger
        typed `blob.BlobClient`. In Azure the extension builds it from the function's
        connection setting (AzureWebJobsStorage); this service client comes from the
        same setting, and sharing it keeps its connection pool."""
        return self.service.get_blob_client(container, name)


def _info(container: str, props) -> BlobInfo:
    modified = props.last_modified.timestamp() if props.last_modified else 0.0
    return BlobInfo(container, props.name, props.etag, int(props.size or 0), modified)
