"""Bytes a hostile or broken client sends the local host, over a real socket: each
gets a 4xx in the API's JSON error shape (or Azure's empty 404/401), never a 500,
a dropped connection or a traceback; slow and numerous clients are bounded."""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import threading
import time

import pytest

from pipeline.storage import FolderStorage
from triggers import decode
from triggers.events import BlobArrival
from triggers.host.http_limits import HttpLimits
from triggers.host.local_host import LocalHost
from triggers.notify import CallbackNotifier
from triggers.validation import JSON_MAX_DEPTH, JSON_MAX_INTEGER_DIGITS

KEY = "hostile-test-key"


@pytest.fixture
def start_host(start_host, service):
    """start_host(**limits) -> the host of tests/triggers/conftest.py with these HttpLimits."""

    def start(**limits) -> LocalHost:
        return start_host(service, key=KEY, http_limits=HttpLimits(**limits))

    return start


@pytest.fixture
def host(start_host) -> LocalHost:
    return start_host()


def connect(host: LocalHost) -> socket.socket:
    address, port = host.http.server.server_address[:2]
    sock = socket.create_connection((address, port), timeout=15)
    return sock


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer: (status, headers lower-cased, body). Status 0: the
    server closed the connection without answering."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return 0, {}, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def exchange(host: LocalHost, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with connect(host) as sock:
        sock.sendall(raw)
        return read_answer(sock)


def post(path: str, body: bytes, *, key: str = KEY, extra: str = "") -> bytes:
    return (
        f"POST /api/{path} HTTP/1.1\r\nHost: t\r\nx-functions-key: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def json_error(status_headers_body) -> dict:
    _, headers, body = status_headers_body
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert set(error) == {"code", "message", "details"}
    return error


@pytest.fixture
def no_tracebacks(caplog):
    caplog.set_level(logging.DEBUG)
    yield
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


# --- part 1: bytes that used to crash a request ------------------------------------------
def test_json_nested_past_the_limit_is_400_naming_it(host, fake_submitter, no_tracebacks):
    body = b'{"tags": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    answer = exchange(host, post("runs", body))
    assert answer[0] == 400
    error = json_error(answer)
    assert error["code"] == "json_too_deep" and f"{JSON_MAX_DEPTH}" in error["message"]
    assert fake_submitter.calls == 0


def test_json_nested_to_the_limit_is_parsed_and_judged_by_the_model(host):
    deep = b"[" * (JSON_MAX_DEPTH - 1) + b"]" * (JSON_MAX_DEPTH - 1)
    answer = exchange(host, post("runs", b'{"tags": ' + deep + b"}"))
    assert answer[0] == 422 and json_error(answer)["details"][0]["path"] == "tags"


def test_brackets_inside_strings_do_not_count_as_nesting(host, fake_submitter):
    answer = exchange(host, post("runs", json.dumps({"reason": "[" * 400}).encode()))
    assert answer[0] == 202


@pytest.mark.parametrize("route", ["runs", "verifications"])
def test_integer_past_pythons_digit_limit_is_400(host, route, no_tracebacks):
    body = b'{"params": {"seed": ' + b"9" * (JSON_MAX_INTEGER_DIGITS + 1) + b"}}"
    answer = exchange(host, post(route, body))
    assert answer[0] == 400
    error = json_error(answer)
    assert error["code"] == "integer_too_long" and "4300" in error["message"]


@pytest.mark.parametrize("key", [KEY, None])
@pytest.mark.parametrize("length", ["²", "٣", "-1", "1e3", "0x10", " "])
def test_content_length_that_is_not_ascii_digits_is_400(host, key, length, no_tracebacks):
    key_line = f"x-functions-key: {key}\r\n" if key else ""
    raw = f"POST /api/runs HTTP/1.1\r\nHost: t\r\n{key_line}Content-Length: {length}\r\n\r\n{{}}"
    answer = exchange(host, raw.encode())
    assert answer[0] == 400
    error = json_error(answer)
    assert error["code"] == "bad_content_length" and "ASCII digits" in error["message"]
    assert answer[1]["connection"] == "close"


def test_two_different_content_lengths_are_400(host):
    raw = b"POST /api/runs HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
    answer = exchange(host, raw)
    assert answer[0] == 400 and json_error(answer)["code"] == "bad_content_length"


def test_content_length_of_thousands_of_digits_is_413_not_a_crash(host, no_tracebacks):
    raw = post("runs", b"", extra="").replace(
        b"Content-Length: 0", b"Content-Length: " + b"9" * 5000
    )
    answer = exchange(host, raw)
    assert answer[0] == 413 and json_error(answer)["code"] == "payload_too_large"


@pytest.mark.parametrize(("limit", "status"), [("²", 400), ("1" * 5000, 400), ("x", 400),
                                               ("0", 422), ("201", 422)])  # fmt: skip
def test_limit_query_that_is_not_an_integer_in_range_is_4xx_naming_limit(host, limit, status):
    raw = f"GET /api/runs?limit={limit} HTTP/1.1\r\nHost: t\r\nx-functions-key: {KEY}\r\n\r\n"
    answer = exchange(host, raw.encode())
    assert answer[0] == status
    error = json_error(answer)
    assert error["code"] == "invalid_query" and error["details"][0]["path"] == "limit"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /api/health HTTP/2.0\r\n\r\n", 505),
        (b"GET /api/health HTTP/1.x\r\n\r\n", 400),
        (b"GET /api/health HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n", 431),
        (b"GET /api/health HTTP/1.1\r\n" + b"X: a\r\n" * 120 + b"\r\n", 431),
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414),
    ],
)
def test_unreadable_requests_get_a_json_4xx_not_the_stdlib_html(host, raw, status, no_tracebacks):
    answer = exchange(host, raw)
    assert answer[0] == status
    assert json_error(answer)["message"]


@pytest.mark.parametrize("target", ["//evil/api/runs", "//[/api/runs", "*", "http://x/api/runs"])
def test_a_target_that_is_not_a_path_routes_nowhere(host, target, no_tracebacks):
    raw = f"GET {target} HTTP/1.1\r\nHost: t\r\nx-functions-key: {KEY}\r\n\r\n".encode()
    status, _, body = exchange(host, raw)
    assert status == 404 and body == b""


def test_a_body_cut_short_starts_nothing(host, fake_submitter):
    with connect(host) as sock:
        sock.sendall(post("runs", b"{}").replace(b"Content-Length: 2", b"Content-Length: 50"))
        sock.shutdown(socket.SHUT_WR)
        assert read_answer(sock)[0] == 0
    assert exchange(host, post("runs", b"{}"))[0] == 202  # the host still serves
    assert fake_submitter.calls == 1


def test_a_chunked_body_nobody_reads_closes_the_connection(host):
    with connect(host) as sock:
        sock.sendall(b"POST /api/nothing HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked"
                     b"\r\n\r\n2\r\n{}\r\n0\r\n\r\n")  # fmt: skip
        status, headers, _ = read_answer(sock)
        assert status == 404 and headers["connection"] == "close"
        assert sock.recv(1024) == b""  # its chunks are never read as a next request


def test_keep_alive_requests_share_a_connection(host):
    with connect(host) as sock:
        for _ in range(3):
            sock.sendall(f"GET /api/runs HTTP/1.1\r\nHost: t\r\nx-functions-key: {KEY}\r\n\r\n"
                         .encode())  # fmt: skip
            assert read_answer(sock)[0] == 200


# --- part 4: slow and numerous clients ----------------------------------------------------
def test_an_idle_connection_is_closed_without_an_answer(start_host):
    host = start_host(idle_timeout_s=0.3)
    with connect(host) as sock:
        assert sock.recv(1024) == b""  # closed by the host, nothing sent


def test_an_idle_keep_alive_connection_is_closed_after_its_answer(start_host):
    host = start_host(idle_timeout_s=0.3)
    with connect(host) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_answer(sock)[0] == 200
        assert sock.recv(1024) == b""


def test_headers_trickled_past_the_header_timeout_are_408(start_host, no_tracebacks):
    host = start_host(header_timeout_s=0.5)
    with connect(host) as sock:
        sock.sendall(b"GET /api/runs HTTP/1.1\r\n")
        for _ in range(50):  # a byte now and then never completes the headers
            if select.select([sock], [], [], 0.05)[0]:
                break  # the host has answered
            sock.sendall(b"X")
        answer = read_answer(sock)
    assert answer[0] == 408
    error = json_error(answer)
    assert error["code"] == "request_timeout" and "headers" in error["message"]


def test_a_body_slower_than_the_body_timeout_is_408_and_starts_nothing(
    start_host, fake_submitter, no_tracebacks
):
    host = start_host(body_timeout_s=0.5)
    with connect(host) as sock:
        sock.sendall(post("runs", b"{}").replace(b"Content-Length: 2", b"Content-Length: 9")[:-1])
        answer = read_answer(sock)
    assert answer[0] == 408
    assert "body" in json_error(answer)["message"]
    assert fake_submitter.calls == 0


def test_connections_beyond_the_cap_get_503_with_retry_after(start_host, no_tracebacks):
    host = start_host(idle_timeout_s=60, max_connections=3, retry_after_s=2)
    held = [connect(host) for _ in range(3)]
    try:
        for sock in held:  # each is served (holds a thread) before the next is accepted
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_answer(sock)[0] == 200
        answer = exchange(host, b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert answer[0] == 503 and answer[1]["retry-after"] == "2"
        assert json_error(answer)["code"] == "too_many_connections"
    finally:
        for sock in held:
            sock.close()
    for _ in range(200):  # the held threads notice their client left, then free a slot
        if exchange(host, b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 200:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the host never served again after the connections closed")


# --- blob names ---------------------------------------------------------------------------
def test_a_file_whose_name_is_not_utf8_is_not_a_blob_and_the_drop_still_runs(
    home, service, fake_submitter, clock
):
    drop = home / "storage" / "incoming" / "drops" / "a"
    drop.mkdir(parents=True)
    (drop / "part-1.csv").write_bytes(b"a,b\n1,2\n")
    os.close(os.open(bytes(drop) + b"/part-\xff.csv", os.O_CREAT | os.O_WRONLY))
    listed = [b.name for b in FolderStorage(home / "storage").list_blobs("incoming", "drops/")]
    assert listed == ["drops/a/part-1.csv"]
    service.on_blob(BlobArrival(container="incoming", name="drops/a/part-1.csv"))
    clock.advance(3600)
    [outcome] = service.sweep_drops()
    assert outcome.created and fake_submitter.calls == 1


# --- callback answers ---------------------------------------------------------------------
class RawReceiver:
    """A callback receiver that answers `answer` bytes, `pause_s` apart (forever
    when `repeat`), whatever it was sent."""

    def __init__(self, answer: bytes, *, pause_s: float = 0.0, repeat: bool = False) -> None:
        self.answer, self.pause_s, self.repeat = answer, pause_s, repeat
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook?token=t"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(65536)
                    while True:
                        for byte in self.answer:
                            conn.sendall(bytes([byte]))
                            if self.stop.wait(self.pause_s):
                                return
                        if not self.repeat:
                            break
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


@pytest.mark.parametrize(
    ("answer", "kwargs"),
    [
        (b"HELLO\r\n\r\n", {}),
        (b"HTTP/1.1 200 OK\r\nX-Drip: " + b"a" * 20, {"pause_s": 0.05, "repeat": True}),
    ],
    ids=["garbled-status-line", "trickled-forever"],
)
def test_a_hostile_callback_receiver_is_a_failed_attempt_not_a_crash_or_a_hang(answer, kwargs):
    receiver = RawReceiver(answer, **kwargs)
    notifier = CallbackNotifier(
        local=True, attempts=2, timeout_s=5, attempt_deadline_s=0.5, sleep=lambda s: None
    )
    try:
        delivery = notifier.send(receiver.url, {"run_id": "run-x"})
    finally:
        receiver.close()
    assert not delivery.ok and delivery.attempts == 2 and delivery.error


# --- queue messages -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "body", [b"[" * 100_000, b"\xff\xfe", b'{"container": 1}', b"1" * 5000, b"null"]
)
def test_a_drop_window_message_that_is_not_ours_is_undecodable_not_a_crash(body):
    with pytest.raises(decode.UndecodableEvent):
        decode.drop_window(body)
