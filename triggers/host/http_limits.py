"""How long and how many: the local host's bounds on slow and numerous clients.

Azure's front end stands between callers and the Functions host there; locally the
host's own server faces them, so a client that opens a connection and sends
nothing, or trickles a body, must not hold a thread for ever, and a crowd of them
must not spawn a thread each. The limits (README, "Known limits"):

- `idle_timeout_s`: a keep-alive connection with no new request is closed;
- `header_timeout_s`: a request line and headers, counted from their first byte;
  past it the answer is 408 and the connection closes;
- `body_timeout_s`: the whole body, and the writing of the answer; 408 past it;
- `max_connections`: connections served at once (one thread each); beyond it a
  new connection is answered 503 with Retry-After and closed.

HostHttpServer applies them to a stdlib ThreadingHTTPServer; http_server.py's
handler reads through a DeadlineReader.
"""

from __future__ import annotations

import io
import json
import logging
import queue
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import ThreadingHTTPServer

log = logging.getLogger("aml_trigger.host.http")


@dataclass(frozen=True, kw_only=True)
class HttpLimits:
    idle_timeout_s: float = 5.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 32
    retry_after_s: int = 2


class ContentLengthError(ValueError):
    """A Content-Length the host cannot read; the message says what is accepted."""


# Longer than any body the host accepts, without converting an absurd digit string.
_TOO_LONG = 10**18


def parse_content_length(values: list[str]) -> int:
    """The body length of a request from its Content-Length header(s). ASCII digits
    only: `str.isdigit` also accepts '²' or '٣', which `int` then refuses or reads."""
    distinct = {value.strip() for value in values}
    if not distinct:
        return 0
    if len(distinct) > 1:
        raise ContentLengthError(
            f"Content-Length is given {len(values)} times with different values; send one"
        )
    text = distinct.pop()
    if not re.fullmatch(r"[0-9]+", text, flags=re.ASCII):
        raise ContentLengthError(
            f"Content-Length must be a number of bytes in ASCII digits (got {text[:40]!r})"
        )
    return int(text) if len(text) < 18 else _TOO_LONG


class DeadlineReader(io.RawIOBase):
    """The socket's reads, each waiting only for what is left of the current phase:
    idle (until a request's first byte), headers, body. A stalled or trickling
    client meets the deadline however it spaces its bytes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deadline = float("inf")
        self.received = 0
        self._on_first_byte: float | None = None

    def readable(self) -> bool:
        return True

    def expire_in(self, seconds: float, *, then: float | None = None) -> None:
        """Start a phase of `seconds`; `then`: once a byte arrives, a phase of that."""
        self.deadline = time.monotonic() + seconds
        self.received = 0
        self._on_first_byte = then

    def readinto(self, buffer) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the client was too slow")
        self.sock.settimeout(left)
        count = self.sock.recv_into(buffer)
        self.received += count
        if count and self._on_first_byte is not None:
            self.expire_in(self._on_first_byte)
            self.received = count
        return count


class HostHttpServer(ThreadingHTTPServer):
    # The stdlib's backlog of 5 drops connections when a Logic App or a load
    # balancer opens dozens at once (clients then wait a 1 s SYN retry).
    request_queue_size = 128
    daemon_threads = True

    def __init__(self, address, handler, limits: HttpLimits | None = None) -> None:
        super().__init__(address, handler)
        self.limits = limits = limits or HttpLimits()
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._overflow = OverflowRejecter(limits)

    def process_request(self, request, client_address) -> None:
        # One thread per connection, at most max_connections of them.
        if not self._slots.acquire(blocking=False):
            self._overflow.reject(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        # A client that resets or vanishes is no fault of ours: no traceback.
        if isinstance(sys.exc_info()[1], OSError):
            log.debug("connection from %s ended: %s", client_address[0], sys.exc_info()[1])
        else:
            log.exception("the HTTP server failed on a connection from %s", client_address[0])

    def shutdown_request(self, request) -> None:
        linger_close(request)

    def server_close(self) -> None:
        super().server_close()
        self._overflow.close()


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "details": []}}).encode()


class OverflowRejecter:
    """Answers connections beyond `max_connections` with 503 + Retry-After, one at a
    time on a single thread (so a crowd costs one thread, not one each). It reads
    the request head first, for up to a second, so the client is not reset while
    still sending and sees the answer."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self._queue: queue.Queue[socket.socket | None] = queue.Queue(maxsize=64)
        body = error_body(
            "too_many_connections",
            f"the host serves at most {limits.max_connections} connections at once; "
            f"retry after {limits.retry_after_s} s",
        )
        self._answer = (
            b"HTTP/1.1 503 Service Unavailable\r\n"
            b"Content-Type: application/json\r\n"
            + f"Retry-After: {limits.retry_after_s}\r\n".encode()
            + f"Content-Length: {len(body)}\r\n".encode()
            + b"Connection: close\r\n\r\n"
            + body
        )
        self._thread = threading.Thread(target=self._run, name="http-overflow", daemon=True)
        self._thread.start()

    def reject(self, sock: socket.socket) -> None:
        try:
            self._queue.put_nowait(sock)
        except queue.Full:
            _close(sock)  # already shedding as fast as one thread can

    def close(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass  # a daemon thread: it ends with the process

    def _run(self) -> None:
        while (sock := self._queue.get()) is not None:
            try:
                sock.settimeout(1.0)
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    head += chunk
            except OSError:
                pass
            try:
                sock.sendall(self._answer)
            except OSError:
                pass
            linger_close(sock)


def linger_close(sock: socket.socket, seconds: float = 1.0) -> None:
    """Close after the answer without resetting it: closing a socket with unread
    input makes the kernel send RST, and a client may then lose the answer it had
    not read yet. So stop writing, read (and drop) what still comes until the client
    closes or `seconds` pass, then close."""
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                break
    except OSError:
        pass
    sock.close()


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
