"""The Azure storage path against the real emulator: conditional writes, the ledger,
BlobStorage and the blob trigger watching an Azurite container."""

from __future__ import annotations

import threading
import uuid

import pytest

import function_app
from pipeline.blob_storage import BlobStorage
from pipeline.settings import Settings
from triggers import runtime
from triggers.events import BlobArrival
from triggers.host.blob_watcher import BlobWatcher
from triggers.host.functions import index_app
from triggers.host.local_host import app_settings
from triggers.ledger import RunLedger
from triggers.service import Accepted
from triggers.state import BlobState

pytestmark = pytest.mark.azurite


@pytest.fixture
def state(azurite):
    # A container per test keeps tests independent on the shared emulator.
    from pipeline.blob_storage import blob_service_client

    return BlobState(blob_service_client(azurite), container=f"state-{uuid.uuid4().hex[:12]}")


def test_conditional_writes(state):
    created = state.create("ns", "k", {"v": 1})
    assert created is not None
    assert state.create("ns", "k", {"v": 2}) is None  # If-None-Match: *
    replaced = state.replace("ns", "k", {"v": 3}, created.version)
    assert replaced is not None
    assert state.replace("ns", "k", {"v": 4}, created.version) is None  # stale ETag
    assert state.get("ns", "k").doc == {"v": 3}
    assert not state.delete("ns", "k", created.version)
    assert state.delete("ns", "k", replaced.version)
    assert state.get("ns", "k") is None
    state.create("ns", "a/b:c@d", {"x": 1})
    assert [k for k, _ in state.items("ns")] == ["a/b:c@d"]


def test_fifty_concurrent_claims_of_one_key_have_one_owner(state):
    ledger = RunLedger(state)
    barrier = threading.Barrier(50)
    owners = []

    def claim():
        barrier.wait()
        _, created = ledger.claim(
            "blob:incoming/a.csv@0x1", run_id="run-abc", trigger="blob", request={},
            fingerprint="f",
        )  # fmt: skip
        owners.append(created)

    threads = [threading.Thread(target=claim) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(owners) == 50 and owners.count(True) == 1
    [entry] = ledger.open_entries()
    assert entry.run_id == "run-abc"


def test_blob_storage_lists_by_prefix_and_never_needs_content(azurite, tmp_path):
    storage = BlobStorage.from_connection_string(azurite)
    container = f"in-{uuid.uuid4().hex[:12]}"
    assert list(storage.list_blobs(container)) == []  # no container yet
    first = storage.put_blob(container, "drops/a/part-0.csv", b"a,b\n1,2\n")
    storage.put_blob(container, "drops/b/part-0.csv", b"a,b\n3,4\n")
    assert [b.name for b in storage.list_blobs(container, "drops/a/")] == ["drops/a/part-0.csv"]
    assert storage.get_blob(container, "drops/a/part-0.csv").etag == first.etag
    assert storage.get_blob(container, "missing.csv") is None
    rewritten = storage.put_blob(container, "drops/a/part-0.csv", b"a,b\n5,6\n")
    assert rewritten.etag != first.etag and rewritten.size == 8
    written = storage.download_prefix(container, "drops/", tmp_path / "dl")
    assert sorted(p.relative_to(tmp_path / "dl").as_posix() for p in written) == [
        "a/part-0.csv",
        "b/part-0.csv",
    ]
    assert storage.uri(container, "drops/a/part-0.csv").endswith(f"/{container}/drops/a/part-0.csv")


class _CountingTransport:
    """The real HTTP transport, noting each request that reaches the wire."""

    def __init__(self) -> None:
        from azure.core.pipeline.transport import RequestsTransport

        self._inner = RequestsTransport()
        self.requests: list[tuple[str, str]] = []

    def send(self, request, **kwargs):
        self.requests.append((request.method, request.url.partition("?")[0]))
        return self._inner.send(request, **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __enter__(self):
        self._inner.__enter__()
        return self

    def __exit__(self, *args):
        self._inner.__exit__(*args)


def test_blob_trigger_on_azurite_makes_one_run_per_drop(azurite, home, fake_submitter):
    from dataclasses import replace

    from azure.storage.blob import BlobClient

    from pipeline.blob_storage import blob_service_client

    container = f"in-{uuid.uuid4().hex[:12]}"
    env = {
        "AML_TRIGGER_HOME": str(home),
        "AzureWebJobsStorage": azurite,
        "INCOMING_CONTAINER": container,
    }
    settings = Settings.from_env(env)
    service = runtime.build_service(settings, submitter=fake_submitter)
    assert isinstance(service.ledger.state, BlobState)  # the ledger lives in the account
    runtime.install(service)
    wire = _CountingTransport()
    bound = []  # per invocation: what the function got, and the requests it made with it

    def recording(call):
        def invoke(value):
            before = len(wire.requests)
            call(value)
            bound.append((value, wire.requests[before:]))

        return invoke

    try:
        storage = BlobStorage(blob_service_client(azurite, transport=wire))
        for i in range(20):
            storage.put_blob(container, f"drops/z/part-{i:02}.csv", b"a,b\n1,2\n")
        storage.put_blob(container, "drops/z/_SUCCESS", b"")
        blobs = index_app(function_app.app, app_settings(settings, env)).blobs
        assert [b.deferred for b in blobs] == [True]
        blobs = tuple(replace(b, call=recording(b.call)) for b in blobs)
        watcher = BlobWatcher(blobs, storage, home / "host")
        assert len(watcher.scan().fired) == 21
        assert watcher.scan().fired == []  # receipts: each version fires once
        watcher.close()
    finally:
        runtime.reset()
    assert len(bound) == 21
    for client, requests in bound:
        # The object Azure binds, and at most one request: the properties (HEAD), never a GET.
        assert type(client) is BlobClient
        assert [method for method, _ in requests] == ["HEAD"]
        assert requests[0][1].endswith(f"/{container}/{client.blob_name}")
    assert len(fake_submitter.submissions) == 1
    record = fake_submitter.get(fake_submitter.submissions[0])
    assert record.request["data"] == "drops/z/" and record.trigger == "blob"
    # The marker's event delivered again (as Event Grid may): the same run.
    outcome = service.on_blob(BlobArrival(container=container, name="drops/z/_SUCCESS"))
    assert isinstance(outcome, Accepted) and not outcome.created


class _CountingWalks:
    """The real BlobStorage, noting which folders a scan lists."""

    def __init__(self, storage: BlobStorage) -> None:
        self._storage = storage
        self.walked: list[str] = []

    def walk(self, container: str, prefix: str = ""):
        self.walked.append(prefix)
        return self._storage.walk(container, prefix)

    def __getattr__(self, name):
        return getattr(self._storage, name)


def test_finished_drop_folders_are_not_listed_again_so_old_data_does_not_slow_detection(
    azurite, home, fake_submitter
):
    container = f"in-{uuid.uuid4().hex[:12]}"
    env = {"AML_TRIGGER_HOME": str(home), "AzureWebJobsStorage": azurite,
           "INCOMING_CONTAINER": container, "MAX_CONCURRENT_RUNS": "10"}  # fmt: skip
    settings = Settings.from_env(env)
    runtime.install(runtime.build_service(settings, submitter=fake_submitter))
    real = BlobStorage.from_connection_string(azurite)
    for drop in ("old-1", "old-2"):
        for i in range(3):
            real.put_blob(container, f"drops/{drop}/part-{i}.csv", b"a,b\n1,2\n")
        real.put_blob(container, f"drops/{drop}/_SUCCESS", b"")
    real.put_blob(container, "drops/open/part-0.csv", b"a,b\n1,2\n")  # no marker yet
    storage = _CountingWalks(real)
    blobs = index_app(function_app.app, app_settings(settings, env)).blobs
    watcher = BlobWatcher(blobs, storage, home / "host", marker_name="_SUCCESS")
    try:
        assert len(watcher.scan().fired) == 9
        storage.walked.clear()
        assert watcher.scan().fired == []
        # Finished drops are skipped; the root, drops/ and the unfinished drop are listed.
        assert sorted(storage.walked) == ["", "drops/", "drops/open/"]

        real.put_blob(container, "drops/new/part-0.csv", b"a,b\n1,2\n")
        real.put_blob(container, "drops/new/_SUCCESS", b"")
        assert sorted(watcher.scan().fired) == ["drops/new/_SUCCESS", "drops/new/part-0.csv"]
        real.put_blob(container, "drops/open/_SUCCESS", b"")
        assert watcher.scan().fired == ["drops/open/_SUCCESS"]

        # A rewrite inside a finished folder is found by the periodic full pass.
        real.put_blob(container, "drops/old-1/part-0.csv", b"a,b\n3,4\n")
        assert watcher.scan().fired == []
        watcher.full_scan_every_s = 0
        assert watcher.scan().fired == ["drops/old-1/part-0.csv"]
    finally:
        watcher.close()
        runtime.reset()
    submitted = sorted(fake_submitter.get(r).request["data"] for r in fake_submitter.submissions)
    # One run per finished drop; the rewritten part opens a new drop of old-1 that the
    # service runs after its quiet window (not in this test's time).
    assert submitted == ["drops/new/", "drops/old-1/", "drops/old-2/", "drops/open/"]


def test_drop_window_on_azurite_is_a_hidden_queue_message_until_the_quiet_window(
    azurite, home, fake_submitter
):
    import time

    from triggers.host.queues import QueueRunner, StorageSource
    from triggers.queues import StorageQueue

    container = f"in-{uuid.uuid4().hex[:12]}"
    queue_name = f"drops-{uuid.uuid4().hex[:12]}"
    env = {"AML_TRIGGER_HOME": str(home), "AzureWebJobsStorage": azurite,
           "INCOMING_CONTAINER": container, "BLOB_QUIET_SECONDS": "3"}  # fmt: skip
    settings = Settings.from_env(env)
    service = runtime.build_service(settings, submitter=fake_submitter)
    assert isinstance(service.drop_queue, StorageQueue)  # a Storage queue, not a folder
    service.drop_queue = StorageQueue.from_connection_string(azurite, queue_name)
    runtime.install(service)
    index = index_app(function_app.app, app_settings(settings, env))
    source = StorageSource.from_connection_string(azurite, queue_name)
    runner = QueueRunner(index.queues, lambda function: source)
    storage = BlobStorage.from_connection_string(azurite)
    watcher = BlobWatcher(index.blobs, storage, home / "host")
    try:
        for i in range(3):
            storage.put_blob(container, f"drops/w/part-{i}.csv", b"a,b\n1,2\n")
        assert len(watcher.scan().fired) == 3
        queue = service.drop_queue.client
        assert queue.get_queue_properties().approximate_message_count == 1  # one per drop
        assert list(queue.peek_messages()) == []  # hidden: the quiet window is open
        deadline = time.monotonic() + 60
        while not fake_submitter.submissions and time.monotonic() < deadline:
            runner.poll()
            time.sleep(0.2)
    finally:
        watcher.close()
        runtime.reset()
    assert len(fake_submitter.submissions) == 1
    assert fake_submitter.get(fake_submitter.submissions[0]).request["data"] == "drops/w/"
    assert queue.get_queue_properties().approximate_message_count == 0


def test_a_failing_queue_message_on_azurite_is_tried_five_times_then_poisoned(azurite):
    from triggers.host.functions import QueueFunction
    from triggers.host.queues import QueueRunner, StorageSource
    from triggers.queues import StorageQueue

    name = f"drops-{uuid.uuid4().hex[:12]}"
    tries = []

    def failing(message):
        tries.append(message.dequeue_count)
        raise RuntimeError("ledger unreachable")

    StorageQueue.from_connection_string(azurite, name).send('{"x": 1}', delay_s=0)
    source = StorageSource.from_connection_string(azurite, name)
    runner = QueueRunner((QueueFunction("f", name, "AzureWebJobsStorage", failing),),
                         lambda function: source)  # fmt: skip
    for _ in range(6):
        runner.poll()
    assert tries == [1, 2, 3, 4, 5]  # the dequeue count Azure keeps, as the host reads it
    assert list(source.client.peek_messages()) == []
    [poisoned] = source.poison_client.peek_messages()
    assert poisoned.content == '{"x": 1}'  # Base64 on the wire, text to the function
