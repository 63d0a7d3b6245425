"""What an answer may show of a run: no server paths, no caller's secrets.

Every key holder can list every run, so what one caller sent must not leak to the
next, and nothing about the server's file layout should leak to any of them:
- paths under AML_TRIGGER_HOME (or the code's own folder) are shown relative to it
  (`runs/run-1/train.log`), any other absolute path by its last segment;
- a callback_url is shown as scheme, host and path: its query string (often a
  token, as in Logic Apps' signed callback URLs) and fragment stay server-side,
  where the callback is still delivered to the whole URL.

Applied where runs leave the app: the HTTP answers and the callback payloads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.runs import RunRecord

CODE_ROOT = Path(__file__).resolve().parents[1]

# An absolute POSIX path not inside a URL or a relative path: `/` not preceded by a
# word character, `.`, `:` or another `/` (so `https://h/x` and `a/b` are left be).
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/[^\s'\"()<>,;:`]+")


class Disclosure:
    def __init__(self, home: Path | str | None) -> None:
        roots = {str(CODE_ROOT)}
        if home is not None:
            roots |= {str(Path(home).absolute()), str(Path(home).resolve())}
        # Longest first, so the home wins over the code folder it may sit in. Matched
        # literally (a home may hold spaces), as a whole path or a path's head.
        ordered = sorted((r.rstrip("/") for r in roots if r != "/"), key=len, reverse=True)
        self._roots = re.compile(
            r"(?<![\w.:/~-])(?:"
            + "|".join(map(re.escape, ordered))
            + r")(?:/|(?![^\s'\"()<>,;:`]))"
        )

    def text(self, value: str) -> str:
        inside = self._roots.sub(lambda m: "" if m.group().endswith("/") else ".", value)
        return _ABSOLUTE_PATH.sub(_last_segment, inside)

    def value(self, value: Any) -> Any:
        """`value` with every string in it passed through `text`."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value

    def run(self, record: RunRecord) -> dict[str, Any]:
        """A run as answers show it. Its request is the caller's own input and is
        left as given, except the callback_url."""
        shown = record.model_dump(mode="json")
        request = shown.pop("request", None)
        shown = self.value(shown)
        shown["request"] = shown_request(request)
        return shown


def _last_segment(found: re.Match[str]) -> str:
    """An absolute path outside the home and the code: its last segment only."""
    path = found.group()
    name = path.rstrip("/").rpartition("/")[2]
    return name + ("/" if path.endswith("/") and name else "")


def shown_callback_url(url: str) -> str:
    """scheme://host[:port]/path of a callback URL: the query and fragment (and any
    user info, which validation refuses anyway) are never shown."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a number: not shown either
        port = ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def shown_request(request: dict[str, Any] | None) -> dict[str, Any] | None:
    if not request or not request.get("callback_url"):
        return request
    return {**request, "callback_url": shown_callback_url(request["callback_url"])}
