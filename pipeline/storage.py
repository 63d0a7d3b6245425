"""Where incoming data lives: the storage seam (folder / Azurite / Azure Blob).

The embedded default is a folder per container under AML_TRIGGER_HOME/storage.
Blob implementations sit behind the same interface so the watcher, the policies and
the local executor do not care which one they talk to.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A blob (or file) as the watcher sees it: never its content."""

    container: str
    name: str
    etag: str
    size: int
    last_modified: float  # epoch seconds

    @property
    def path(self) -> str:
        return f"{self.container}/{self.name}"


class Storage(Protocol):
    kind: str

    def list_blobs(self, container: str, prefix: str = "") -> Iterator[BlobInfo]: ...

    def get_blob(self, container: str, name: str) -> BlobInfo | None: ...

    def put_blob(self, container: str, name: str, data: bytes) -> BlobInfo: ...

    def download_prefix(self, container: str, prefix: str, dest: Path) -> list[Path]:
        """Copy every blob under `prefix` into `dest`, keeping relative names."""
        ...

    def uri(self, container: str, name: str) -> str: ...

    def blob_client(self, container: str, name: str):
        """What the blob trigger binds for `blob.BlobClient`: a reference to one blob."""
        ...


class FolderStorage:
    """Containers as folders: `root/<container>/<name>`. ETags are derived from
    size and mtime (ns) so a rewrite of the same name is a new version, as in Blob."""

    kind = "folder"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _container(self, container: str) -> Path:
        return self.root / container

    def list_blobs(self, container: str, prefix: str = "") -> Iterator[BlobInfo]:
        base = self._container(container)
        start = base / prefix if prefix and prefix.endswith("/") else base
        if not start.exists():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            for filename in sorted(filenames):
                full = Path(dirpath) / filename
                name = full.relative_to(base).as_posix()
                if name.startswith(prefix):
                    info = self._info(container, name, full)
                    if info is not None:
                        yield info

    def get_blob(self, container: str, name: str) -> BlobInfo | None:
        return self._info(container, name, self._container(container) / name)

    def put_blob(self, container: str, name: str, data: bytes) -> BlobInfo:
        target = self._container(container) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, target)  # readers never see half a file
        info = self._info(container, name, target)
        assert info is not None
        return info

    def download_prefix(self, container: str, prefix: str, dest: Path) -> list[Path]:
        written = []
        for blob in self.list_blobs(container, prefix):
            rel = blob.name[len(prefix) :] if prefix else blob.name
            target = Path(dest) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self._container(container) / blob.name, target)
            written.append(target)
        return written

    def uri(self, container: str, name: str) -> str:
        return (self._container(container) / name).resolve().as_uri()

    def blob_client(self, container: str, name: str) -> FolderBlobClient:
        return FolderBlobClient(self, container, name)

    @staticmethod
    def _info(container: str, name: str, full: Path) -> BlobInfo | None:
        try:
            st = full.stat()
        except FileNotFoundError:
            return None
        if not full.is_file() or full.name.startswith("."):
            return None  # hidden files are in-progress writes (see put_blob)
        if not _utf8(name):
            # Blob names travel as UTF-8 (percent-encoded in the REST URL); a file
            # whose name is not UTF-8 cannot be a blob, and would fail every key and
            # log line it reached.
            return None
        etag = hashlib.sha1(f"{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
        return BlobInfo(container, name, f'"{etag}"', st.st_size, st.st_mtime)


@dataclass(frozen=True, slots=True)
class FolderBlobProperties:
    """The fields of azure.storage.blob.BlobProperties a folder can honestly give."""

    name: str
    container: str
    etag: str
    size: int
    last_modified: datetime


class FolderBlobClient:
    """Folder storage's nearest honest equivalent of the azure.storage.blob.BlobClient
    the Functions host binds for a blob trigger: the same attributes and the one call
    the blob function uses (`container_name`, `blob_name`, `url`,
    `get_blob_properties()`, which raises ResourceNotFoundError for a missing blob as
    the service does), and nothing else: a folder has no download or lease API to
    imitate, so there is none (an AttributeError, not a silent stand-in)."""

    __slots__ = ("_storage", "container_name", "blob_name")

    def __init__(self, storage: FolderStorage, container: str, name: str) -> None:
        self._storage = storage
        self.container_name = container
        self.blob_name = name

    @property
    def url(self) -> str:
        return self._storage.uri(self.container_name, self.blob_name)

    def get_blob_properties(self) -> FolderBlobProperties:
        info = self._storage.get_blob(self.container_name, self.blob_name)
        if info is None:
            from azure.core.exceptions import ResourceNotFoundError

            raise ResourceNotFoundError(
                f"The specified blob does not exist: {self.container_name}/{self.blob_name}"
            )
        return FolderBlobProperties(
            name=info.name,
            container=info.container,
            etag=info.etag,
            size=info.size,
            last_modified=datetime.fromtimestamp(info.last_modified, UTC),
        )


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")  # os.walk hands undecodable bytes over as surrogates
    except UnicodeEncodeError:
        return False
    return True


def open_storage(settings) -> Storage:  # settings: pipeline.settings.Settings
    """The storage named by AzureWebJobsStorage: empty = folders under
    AML_TRIGGER_HOME/storage, otherwise Azurite or an Azure account (imported lazily
    so the folder default never loads the Azure SDK)."""
    if settings.storage_kind == "folder":
        refuse_folder_storage_in_azure(settings)
        return FolderStorage(Path(settings.home) / "storage")
    from pipeline.blob_storage import BlobStorage, account_service_client

    return BlobStorage(account_service_client(settings))


def refuse_folder_storage_in_azure(settings) -> None:
    """In Azure (WEBSITE_INSTANCE_ID) folders would sit in the instance's read-only
    package, lost on scale-in and unseen by other instances: no storage setting there
    is an error naming it, never a silent fallback."""
    if settings.running_in_azure:
        from pipeline.settings import SettingsError

        raise SettingsError(
            "AzureWebJobsStorage: not set, and neither is AzureWebJobsStorage__accountName "
            "(or __blobServiceUri). In Azure the app keeps its state and reads incoming "
            "data in a storage account: set AzureWebJobsStorage__accountName with "
            "AzureWebJobsStorage__credential=managedidentity (what infra/ deploys) or a "
            "connection string in AzureWebJobsStorage."
        )
