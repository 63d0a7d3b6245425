"""HTTP functions over a stdlib ThreadingHTTPServer, the way the Functions host
serves them: routes under the host.json route prefix, keys as `x-functions-key`
or `?code=`, a 100 MB body limit, and the handler's own HttpResponse written back.

What the host itself answers (no function involved) is what Azure's host answers:
404 with an empty body for no route, a wrong method included (Azure routes by
method and path: azure-functions-host issues #10098 and #11625), 401 with an empty
body for a missing or wrong key. Bytes that are not a readable request (a bad
request line, Content-Length or header block, a client too slow) get a 4xx in the
API's JSON error shape, never the standard library's HTML page or a dropped
connection; 413 for a body over the host limit. Slow clients: http_limits.py.
"""

from __future__ import annotations

import hmac
import io
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qsl

import azure.functions as func

from triggers.host.functions import HttpFunction
from triggers.host.http_limits import (
    ContentLengthError,
    DeadlineReader,
    HostHttpServer,
    HttpLimits,
    error_body,
    parse_content_length,
)

log = logging.getLogger("aml_trigger.host.http")

HOST_BODY_LIMIT = 100 * 1024 * 1024


class FunctionsHttpServer:
    def __init__(
        self,
        functions: tuple[HttpFunction, ...],
        *,
        key: str,
        host: str = "127.0.0.1",
        port: int = 7071,
        route_prefix: str = "api",
        limits: HttpLimits | None = None,
    ) -> None:
        self.functions = functions
        self.key = key
        self.route_prefix = route_prefix.strip("/")
        self.limits = limits or HttpLimits()
        handler = type("Handler", (_Handler,), {"host": self})
        self.server = HostHttpServer((host, port), handler, self.limits)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="http", kwargs={"poll_interval": 0.2}
        )
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # --- dispatch (called from handler threads) -------------------------------------
    def authorised(self, function: HttpFunction, headers, query: dict[str, str]) -> bool:
        if function.auth_level == "anonymous":
            return True
        given = headers.get("x-functions-key") or query.get("code") or ""
        return hmac.compare_digest(given.encode(), self.key.encode())

    def resolve(self, method: str, path: str) -> tuple[HttpFunction | None, dict[str, str]]:
        """The function serving `method` on `path` and its route params, else None:
        a path served for other methods only is no route either (Azure's 404)."""
        prefix = f"/{self.route_prefix}/" if self.route_prefix else "/"
        if not path.startswith(prefix):
            return None, {}
        rel = path[len(prefix) :].strip("/")
        for function in self.functions:
            params = function.match(rel)
            if params is not None and method in function.methods:
                return function, params
        return None, {}


class _Handler(BaseHTTPRequestHandler):
    host: FunctionsHttpServer
    protocol_version = "HTTP/1.1"
    server_version = "aml-trigger-host"
    # Headers and body go out in two writes; with Nagle on, a keep-alive client's
    # delayed ACK holds the second one back ~40 ms on every request.
    disable_nagle_algorithm = True
    # Refusals of an unreadable request line carry a status line; with the stdlib's
    # default (HTTP/0.9) they would be a bare body no HTTP/1 client can read.
    default_request_version = "HTTP/1.0"

    def setup(self) -> None:
        super().setup()
        self.reader = DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self.reader)

    def handle_one_request(self) -> None:
        """The stdlib's loop step, with deadlines and without its 501 for methods it
        has no `do_` for: every method goes to routing, as on Azure's host."""
        limits = self.host.limits
        self.command, self.path, self.request_version = "", "", self.default_request_version
        self.raw_requestline, self._reading_body = b"", False
        self.reader.expire_in(limits.idle_timeout_s, then=limits.header_timeout_s)
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if len(self.raw_requestline) > 65536:
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return
            if not self.parse_request():
                return  # send_error has answered
            self._dispatch()
            self.wfile.flush()
        except TimeoutError:
            self.close_connection = True
            if self.raw_requestline or self.reader.received:  # a request had begun: say why
                self._error(408, "request_timeout", self._timeout_message())
        except ConnectionError:
            self.close_connection = True

    def _timeout_message(self) -> str:
        limits = self.host.limits
        if self._reading_body:
            return f"the request body did not arrive within {limits.body_timeout_s:g} s"
        return f"the request line and headers did not arrive within {limits.header_timeout_s:g} s"

    def _dispatch(self) -> None:
        try:
            length = parse_content_length(self.headers.get_all("Content-Length") or [])
        except ContentLengthError as exc:
            self.close_connection = True  # where this body ends cannot be known
            return self._error(400, "bad_content_length", str(exc))
        # Split by hand: urlsplit reads `//host/...` as an authority (and raises on
        # `//[`), which would route a path the client did not send.
        path, query_text = _target(self.path)
        query = dict(parse_qsl(query_text, keep_blank_values=True))
        method = self.command.upper()
        function, found = self.host.resolve(method, path) if path.startswith("/") else (None, {})
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        if function is None:
            self._drain(length, chunked)
            return self._empty(404)
        if not self.host.authorised(function, self.headers, query):
            self._drain(length, chunked)
            return self._empty(401)
        if chunked:
            self.close_connection = True
            return self._error(411, "length_required", "send the body with a Content-Length")
        if length > HOST_BODY_LIMIT:
            self.close_connection = True
            return self._error(413, "payload_too_large", "body over the host's 100 MB limit")
        body = self._read_body(length)
        if body is None:
            return
        request = func.HttpRequest(
            method,
            f"{self.host.url}{self.path}",
            headers={k.lower(): v for k, v in self.headers.items()},
            params=query,
            route_params=found,
            body=body,
        )
        from triggers import telemetry

        with telemetry.collect() as ids:
            try:
                response = function.call(request)
            except Exception:
                log.exception("function %s raised", function.name)
                return self._error(500, "internal_error", "the function failed; see the host log")
        with telemetry.scoped(**ids):  # the access log line names the run too
            self._write(response)

    def _read_body(self, length: int) -> bytes | None:
        """The whole body within body_timeout_s; None when the client went away
        before sending it all (nothing to answer, nothing to run)."""
        if not length:
            return b""
        self._reading_body = True
        self.reader.expire_in(self.host.limits.body_timeout_s)
        body = self.rfile.read(length)  # TimeoutError: 408 in handle_one_request
        if len(body) < length:
            self.close_connection = True
            return None
        return body

    def _drain(self, length: int, chunked: bool) -> None:
        """Read past an unwanted body so the connection can serve the next request,
        or close it when the body's end is not known or too far."""
        if chunked:
            self.close_connection = True
        elif 0 < length <= HOST_BODY_LIMIT:
            self._reading_body = True
            self.reader.expire_in(self.host.limits.body_timeout_s)
            self.rfile.read(length)
        elif length != 0:
            self.close_connection = True

    def _write(self, response: func.HttpResponse) -> None:
        # Writing gets the body's bound: a client that never reads its answer goes.
        self.connection.settimeout(self.host.limits.body_timeout_s)
        body = response.get_body() or b""
        self.send_response(response.status_code)
        headers = dict(response.headers)
        if response.mimetype and not any(k.lower() == "content-type" for k in headers):
            charset = f"; charset={response.charset}" if response.charset else ""
            headers["Content-Type"] = f"{response.mimetype}{charset}"
        for name, value in headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        self._write(
            func.HttpResponse(
                error_body(code, message),
                status_code=status,
                headers=headers,
                mimetype="application/json",
            )
        )

    def _empty(self, status: int) -> None:
        """What Azure's host answers itself (404 no route, 401 no key): no body, no type."""
        self.connection.settimeout(self.host.limits.body_timeout_s)
        self.send_response(status)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def send_error(self, code, message=None, explain=None) -> None:
        # The stdlib's own refusals (a bad request line, headers too long or too
        # many, an HTTP version it does not speak) in the API's error shape.
        self.close_connection = True
        status = HTTPStatus(code)
        self._error(status.value, status.name.lower(), (message or status.phrase)[:300])

    # Never the query string (it may hold the function key, `code=`), nor the
    # stdlib's messages, which quote the request line.
    def log_error(self, format: str, *args) -> None:
        log.info("%s %s -> refused", self.command or "-", _target(self.path)[0])

    def log_message(self, format: str, *args) -> None:
        log.info("%s %s", self.command or "-", _target(self.path)[0])

    def log_request(self, code="-", size="-") -> None:
        log.info("%s %s -> %s", self.command, _target(self.path)[0], code)


def _target(target: str) -> tuple[str, str]:
    """(path, query) of a request target."""
    path, _, query = (target or "").partition("#")[0].partition("?")
    return path, query
