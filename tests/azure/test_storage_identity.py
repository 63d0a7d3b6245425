"""AzureWebJobsStorage by identity (what infra/ deploys): the settings read as the
Functions host reads them, the state store reaching the account with a managed-identity
token and no key (at the wire), and in Azure no silent fallback to folder storage."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
import pytest

from pipeline.blob_storage import _credential, account_service_client
from pipeline.settings import Settings, SettingsError
from triggers import entry, runtime
from triggers.state import BlobState

ACCOUNT = "amltriggercontoso"
CLIENT_ID = "0f0e0d0c-0b0a-0908-0706-050403020100"
IDENTITY = {
    "AzureWebJobsStorage__accountName": ACCOUNT,
    "AzureWebJobsStorage__credential": "managedidentity",
    "AzureWebJobsStorage__clientId": CLIENT_ID,
}


def test_identity_settings_name_the_account_the_way_the_host_reads_them():
    by_name = Settings.from_env(IDENTITY)
    assert by_name.storage_kind == "azure"
    assert by_name.storage_account_url == f"https://{ACCOUNT}.blob.core.windows.net"
    assert by_name.storage_client_id == CLIENT_ID
    # An explicit endpoint wins over the account name (sovereign clouds, private DNS).
    endpoint = f"https://{ACCOUNT}.blob.core.chinacloudapi.cn/"
    by_uri = Settings.from_env({**IDENTITY, "AzureWebJobsStorage__blobServiceUri": endpoint})
    assert by_uri.storage_account_url == endpoint
    with pytest.raises(SettingsError, match="AzureWebJobsStorage__blobServiceUri"):
        Settings.from_env({"AzureWebJobsStorage__blobServiceUri": "http://evil/?x"})


class _IdentityEndpoint(BaseHTTPRequestHandler):
    """The App Service managed-identity endpoint (IDENTITY_ENDPOINT, api 2019-08-01)."""

    asked: list[dict] = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        query = parse_qs(urlsplit(self.path).query)
        type(self).asked.append({"query": query, "header": self.headers.get("X-IDENTITY-HEADER")})
        body = json.dumps(
            {
                "access_token": "mi-token-for-storage",
                "expires_on": str(int(time.time()) + 3600),
                "resource": query.get("resource", [""])[0],
                "token_type": "Bearer",
                "client_id": query.get("client_id", [""])[0],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def identity_endpoint(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _IdentityEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for name in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID",
                 "AZURE_FEDERATED_TOKEN_FILE", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT",
                 "IDENTITY_SERVER_THUMBPRINT", "AZURE_TOKEN_CREDENTIALS"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{server.server_port}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "identity-header-value")
    _IdentityEndpoint.asked = []
    _credential.cache_clear()
    yield _IdentityEndpoint.asked
    _credential.cache_clear()
    server.shutdown()
    server.server_close()


def test_state_store_reaches_the_account_with_the_managed_identity_and_no_key(
    identity_endpoint, fake_azure
):
    fake_azure.on("PUT", r"/aml-trigger-state\?restype=container", (201, None))
    fake_azure.on(
        "GET",
        r"/aml-trigger-state/runs/",
        (404, None, {"x-ms-error-code": "BlobNotFound", "Content-Type": "application/xml"}),
    )
    settings = Settings.from_env({**IDENTITY, "WEBSITE_INSTANCE_ID": "instance-1"})
    state = BlobState(account_service_client(settings, transport=fake_azure))
    assert state.get("runs", "http:abc") is None

    assert [s.method for s in fake_azure.sent] == ["PUT", "GET"]
    for sent in fake_azure.sent:
        assert sent.url.startswith(f"https://{ACCOUNT}.blob.core.windows.net/aml-trigger-state")
        assert sent.headers["Authorization"] == "Bearer mi-token-for-storage"
    # The token is the user-assigned identity's, for Storage; asked for once.
    [asked] = identity_endpoint
    assert asked["query"]["client_id"] == [CLIENT_ID]
    assert asked["query"]["resource"] == ["https://storage.azure.com"]
    assert asked["header"] == "identity-header-value"


def test_in_azure_no_storage_setting_fails_at_start_up_naming_it(home, monkeypatch):
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "instance-1")
    settings = Settings.from_env()
    assert settings.storage_kind == "folder" and settings.running_in_azure
    with pytest.raises(SettingsError, match="AzureWebJobsStorage: not set"):
        runtime.build_service(settings)
    # Through the app as Azure calls it: a 503 naming the setting, and no folder state.
    runtime.reset()
    try:
        response = entry.http(
            "submit_run",
            func.HttpRequest(
                "POST",
                "http://x/api/runs",
                headers={"Content-Type": "application/json"},
                body=b'{"reason": "in azure"}',
            ),  # fmt: skip
        )
    finally:
        runtime.reset()
    assert response.status_code == 503
    error = json.loads(response.get_body())["error"]
    assert error["code"] == "misconfigured"
    assert "AzureWebJobsStorage__accountName" in error["message"]
    assert not (home / "ledger.db").exists() and not (home / "storage").exists()


def test_outside_azure_no_storage_setting_is_the_embedded_folder_default(home):
    settings = Settings.from_env({"AML_TRIGGER_HOME": str(home)})
    assert settings.storage_kind == "folder" and not settings.running_in_azure
    from triggers.state import SqliteState, open_state

    assert isinstance(open_state(settings), SqliteState)
