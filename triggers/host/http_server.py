"""HTTP functions over a stdlib ThreadingHTTPServer, the way the Functions host
serves them: routes under the host.json route prefix, keys as `x-functions-key`
or `?code=`, a 100 MB body limit, and the handler's own HttpResponse written back.

What the host itself answers (no function involved) is JSON in the API's error
shape: 404 for no route, 405 with Allow for a route without that method, 401 for
a missing or wrong key, 413 for a body over the host limit.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from triggers.host.functions import HttpFunction

log = logging.getLogger("aml_trigger.host.http")

HOST_BODY_LIMIT = 100 * 1024 * 1024


class HostHttpServer(ThreadingHTTPServer):
    # The stdlib's backlog of 5 drops connections when a Logic App or a load
    # balancer opens dozens at once (clients then wait a 1 s SYN retry).
    request_queue_size = 128
    daemon_threads = True


class FunctionsHttpServer:
    def __init__(
        self,
        functions: tuple[HttpFunction, ...],
        *,
        key: str,
        host: str = "127.0.0.1",
        port: int = 7071,
        route_prefix: str = "api",
    ) -> None:
        self.functions = functions
        self.key = key
        self.route_prefix = route_prefix.strip("/")
        handler = type("Handler", (_Handler,), {"host": self})
        self.server = HostHttpServer((host, port), handler)
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

    def resolve(self, method: str, path: str):
        """(function, route params) or (None, allowed methods) for the path."""
        prefix = f"/{self.route_prefix}/" if self.route_prefix else "/"
        if not path.startswith(prefix):
            return None, set()
        rel = path[len(prefix) :].strip("/")
        allowed: set[str] = set()
        for function in self.functions:
            params = function.match(rel)
            if params is None:
                continue
            if method in function.methods:
                return function, params
            allowed |= function.methods
        return None, allowed


class _Handler(BaseHTTPRequestHandler):
    host: FunctionsHttpServer
    protocol_version = "HTTP/1.1"
    server_version = "aml-trigger-host"
    # Headers and body go out in two writes; with Nagle on, a keep-alive client's
    # delayed ACK holds the second one back ~40 ms on every request.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        method = self.command.upper()
        function, found = self.host.resolve(method, parts.path)
        length_text = self.headers.get("Content-Length") or "0"
        length = int(length_text) if length_text.isdigit() else -1
        if function is None:
            self._drain(length)
            if found:
                allow = ", ".join(sorted(found))
                return self._error(405, "method_not_allowed",
                                   f"{method} is not supported on {parts.path}; use {allow}",
                                   {"Allow": allow})  # fmt: skip
            return self._error(404, "not_found", f"no function serves {parts.path}")
        if not self.host.authorised(function, self.headers, query):
            self._drain(length)
            return self._error(
                401,
                "unauthorized",
                "a valid function key is required (x-functions-key header or code query)",
            )
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            return self._error(411, "length_required", "send the body with a Content-Length")
        if length < 0:
            return self._error(400, "bad_request", "Content-Length must be a number")
        if length > HOST_BODY_LIMIT:
            self.close_connection = True
            return self._error(413, "payload_too_large", "body over the host's 100 MB limit")
        body = self.rfile.read(length) if length else b""
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

    def _drain(self, length: int) -> None:
        if 0 < length <= HOST_BODY_LIMIT:
            self.rfile.read(length)
        elif length != 0:
            self.close_connection = True

    def _write(self, response: func.HttpResponse) -> None:
        body = response.get_body() or b""
        self.send_response(response.status_code)
        headers = dict(response.headers)
        if response.mimetype and not any(k.lower() == "content-type" for k in headers):
            charset = f"; charset={response.charset}" if response.charset else ""
            headers["Content-Type"] = f"{response.mimetype}{charset}"
        for name, value in headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        body = json.dumps({"error": {"code": code, "message": message, "details": []}})
        self._write(
            func.HttpResponse(
                body, status_code=status, headers=headers, mimetype="application/json"
            )
        )

    def log_message(self, format: str, *args) -> None:
        # Never the query string: it may hold the function key (`code=`).
        log.info("%s %s -> %s", self.command, urlsplit(self.path).path, args[1] if args else "")

    def log_request(self, code="-", size="-") -> None:
        log.info("%s %s -> %s", self.command, urlsplit(self.path).path, code)
