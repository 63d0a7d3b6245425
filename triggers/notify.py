"""Callback notifications: POST the originator a JSON summary when a run ends.

URL safety (server-side request forgery): https only; http only to loopback when
running locally. In Azure every address the host resolves to must be public
(not private, loopback, link-local, multicast, reserved or unspecified). The check
runs when the request is accepted AND again before each delivery attempt, and the
connection goes to the address that was checked, so a DNS answer that changes in
between (DNS rebinding) cannot redirect the POST inside the network.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pipeline.runs import RunRecord
from triggers.disclosure import Disclosure, shown_callback_url

Resolver = Callable[[str, int], list[str]]


class UnsafeCallback(ValueError):
    """The callback URL may not be called from here; the message says why."""


def resolve_host(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


def _is_loopback_name(host: str) -> bool:
    if host.lower() in {"localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def check_callback_url(url: str, *, local: bool, resolve: Resolver = resolve_host) -> list[str]:
    """The addresses to connect to, or UnsafeCallback. `local`: running on a laptop
    (http to loopback allowed, no address restrictions for https). Messages show
    the URL without its query (it may hold the receiver's token; they reach logs)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    shown = shown_callback_url(url)
    if parts.scheme not in {"https", "http"} or not host:
        raise UnsafeCallback(f"callback_url {shown!r} must be an absolute https:// URL")
    if parts.scheme == "http" and not (local and _is_loopback_name(host)):
        where = "only to loopback when running locally" if local else "not accepted in Azure"
        raise UnsafeCallback(f"callback_url {shown!r}: http is {where}; use https")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeCallback(f"callback_url {shown!r} has an invalid port") from None
    if local:
        return []  # connect by name
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode
        raise UnsafeCallback(f"callback_url host {host!r} does not resolve ({exc})") from None
    if not addresses:
        raise UnsafeCallback(f"callback_url host {host!r} does not resolve")
    blocked = [a for a in addresses if not _public(a)]
    if blocked:
        raise UnsafeCallback(
            f"callback_url host {host!r} resolves to non-public address(es) "
            f"{', '.join(blocked)}; callbacks go to public addresses only"
        )
    return addresses


@dataclass(frozen=True)
class Delivery:
    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None

    def as_record(self, at: float) -> dict[str, Any]:
        state = "sent" if self.ok else "failed"
        return {"state": state, "attempts": self.attempts, "status": self.status,
                "error": self.error, "at": at}  # fmt: skip


def run_link(record: RunRecord, base_url: str) -> str:
    """Where a person follows the run: Azure ML studio when the backend gave a link,
    else the run in this app's API under `base_url`."""
    return record.extra.get("studio_url") or f"{base_url.rstrip('/')}/api/runs/{record.run_id}"


def run_summary(record: RunRecord, *, run_url: str, home=None) -> dict[str, Any]:
    """The callback's payload (and the ended run's status answer). `home`:
    AML_TRIGGER_HOME, which paths in errors are shown relative to; without it an
    absolute path is shown by its last segment (disclosure.py). Never absolute."""
    gate = record.gate or {}
    summary = {
        "run_id": record.run_id,
        "status": record.status,
        "trigger": record.trigger,
        "idempotency_key": record.idempotency_key,
        "finished_at": record.finished_at,
        "metrics": record.metrics,
        "gate_decision": gate.get("decision"),
        "gate_reasons": gate.get("reasons", []),
        "model_version": record.model_version,
        "endpoint": record.endpoint,
        "run_url": run_url,
        "error": record.error,
    }
    return Disclosure(home).value(summary)


class CallbackNotifier:
    """Delivers one JSON POST with bounded exponential backoff: retries on network
    errors, 408/429 and 5xx; other 4xx answers are final (the receiver said no).

    Each attempt ends within `attempt_deadline_s` whatever the receiver does:
    `timeout_s` bounds each socket wait, but a receiver trickling its answer a
    byte at a time would otherwise hold the delivering thread (the run monitor,
    which also starts queued runs) for hours."""

    def __init__(
        self,
        *,
        local: bool,
        resolve: Resolver = resolve_host,
        attempts: int = 5,
        base_delay_s: float = 1.0,
        max_delay_s: float = 60.0,
        timeout_s: float = 10.0,
        attempt_deadline_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.local = local
        self.resolve = resolve
        self.attempts = attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.timeout_s = timeout_s
        self.attempt_deadline_s = attempt_deadline_s
        self.sleep = sleep

    def check(self, url: str) -> None:
        check_callback_url(url, local=self.local, resolve=self.resolve)

    def send(self, url: str, payload: dict[str, Any]) -> Delivery:
        body = json.dumps(payload).encode()
        error: str | None = None
        status: int | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                addresses = check_callback_url(url, local=self.local, resolve=self.resolve)
            except UnsafeCallback as exc:
                return Delivery(False, attempt, None, str(exc))
            try:
                status = self._post(url, body, addresses[0] if addresses else None)
            except (OSError, UnicodeError, http.client.HTTPException) as exc:
                # The receiver's answer is input too: a garbled status line or a
                # name IDNA cannot encode is a failed attempt, not a crash.
                status, error = None, f"{type(exc).__name__}: {exc}"[:300]
            else:
                if 200 <= status < 300:
                    return Delivery(True, attempt, status)
                error = f"HTTP {status}"
                if 400 <= status < 500 and status not in (408, 429):
                    return Delivery(False, attempt, status, error)
            if attempt < self.attempts:
                self.sleep(min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))
        return Delivery(False, self.attempts, status, error)

    def _post(self, url: str, body: bytes, address: str | None) -> int:
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn_type = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
        conn = conn_type(parts.hostname, parts.port, timeout=self.timeout_s, address=address)
        # Past the deadline the socket is shut down under the blocked read, which
        # then fails like a dropped connection (one failed attempt).
        watchdog = threading.Timer(self.attempt_deadline_s, _shut_down, args=(conn,))
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.request(
                "POST",
                path,
                body=body,
                headers={"Content-Type": "application/json", "User-Agent": "aml-trigger"},
            )
            response = conn.getresponse()
            response.read(65_536)
            return response.status
        finally:
            watchdog.cancel()
            conn.close()


def _shut_down(conn: http.client.HTTPConnection) -> None:
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host, port=None, *, timeout, address: str | None):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        target = self._address or self.host
        self.sock = socket.create_connection((target, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host, port=None, *, timeout, address: str | None):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        target = self._address or self.host
        sock = socket.create_connection((target, self.port), self.timeout)
        # Certificate checked against the URL's host name, not the pinned address.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
