"""What the host serves, read from the app's own registrations (no second list).

`app.get_functions()` may be called only once per app object (azure-functions
raises on a second call), so the index is built once and passed around.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from triggers.schedule import CronSchedule, resolve_setting


class IndexingError(ValueError):
    """A registered function cannot be served; the message names it and why."""


@dataclass(frozen=True)
class HttpFunction:
    name: str
    route: str
    methods: frozenset[str]
    auth_level: str  # anonymous | function | admin
    pattern: re.Pattern[str]
    call: Callable[[Any], Any]

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(path)
        return {k: v for k, v in found.groupdict().items() if v is not None} if found else None


@dataclass(frozen=True)
class TimerFunction:
    name: str
    schedule: CronSchedule
    run_on_startup: bool
    use_monitor: bool
    call: Callable[[Any], Any]


@dataclass(frozen=True)
class BlobFunction:
    name: str
    container: str
    pattern: re.Pattern[str]  # over the blob name inside the container
    connection: str
    source: str
    call: Callable[[Any], Any]
    # The argument is an SDK type (blob.BlobClient): the binding is deferred and the
    # function gets a reference to the blob, never an InputStream of its bytes.
    deferred: bool = False


@dataclass(frozen=True)
class QueueFunction:
    name: str
    queue_name: str
    connection: str
    call: Callable[[Any], Any]


@dataclass(frozen=True)
class EventGridFunction:
    name: str
    call: Callable[[Any], Any]


@dataclass(frozen=True)
class FunctionIndex:
    http: tuple[HttpFunction, ...]
    timers: tuple[TimerFunction, ...]
    blobs: tuple[BlobFunction, ...]
    disabled: tuple[str, ...]
    queues: tuple[QueueFunction, ...] = ()
    event_grid: tuple[EventGridFunction, ...] = ()


def index_app(app, app_settings: Mapping[str, str]) -> FunctionIndex:
    """Read the app's functions; `%SETTING%` in schedules and paths is resolved from
    `app_settings`, and `AzureWebJobs.<name>.Disabled=true` leaves a function out."""
    http, timers, blobs, disabled, queues, event_grid = [], [], [], [], [], []
    for function in registered_functions(app):
        name = function.get_function_name()
        if str(app_settings.get(f"AzureWebJobs.{name}.Disabled", "")).lower() in ("true", "1"):
            disabled.append(name)
            continue
        trigger = function.get_trigger()
        user = function.get_user_function()
        call = _caller(user, trigger.name)
        kind = trigger.type
        try:
            if kind == "httpTrigger":
                route = (trigger.route or name).strip("/")
                methods = frozenset(_text(m).upper() for m in (trigger.methods or [])) or frozenset(
                    {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
                )
                http.append(
                    HttpFunction(
                        name,
                        route,
                        methods,
                        _text(trigger.auth_level or "function").lower(),
                        route_pattern(route),
                        call,
                    )
                )
            elif kind == "timerTrigger":
                schedule = CronSchedule.parse(resolve_setting(trigger.schedule, app_settings))
                monitor = trigger.use_monitor is not False  # the host's default is on
                timers.append(
                    TimerFunction(name, schedule, bool(trigger.run_on_startup), monitor, call)
                )
            elif kind == "blobTrigger":
                path = resolve_setting(trigger.path, app_settings)
                container, _, rest = path.partition("/")
                blobs.append(
                    BlobFunction(
                        name,
                        container,
                        route_pattern(rest or "{name}", catch_all=True),
                        trigger.connection or "AzureWebJobsStorage",
                        _text(getattr(trigger, "source", None) or "LogsAndContainerScan"),
                        call,
                        deferred=is_deferred(user, trigger.name),
                    )
                )
            elif kind == "queueTrigger":
                queue = resolve_setting(trigger.queue_name, app_settings)
                connection = trigger.connection or "AzureWebJobsStorage"
                queues.append(QueueFunction(name, queue, connection, call))
            elif kind == "eventGridTrigger":
                event_grid.append(EventGridFunction(name, call))
            else:
                raise IndexingError(f"function {name!r}: trigger type {kind!r} is not served")
        except ValueError as exc:
            raise IndexingError(f"function {name!r}: {exc}") from None
    return FunctionIndex(
        tuple(http), tuple(timers), tuple(blobs), tuple(disabled), tuple(queues), tuple(event_grid)
    )


def registered_functions(app) -> list:
    """`app.get_functions()`, called once per app object and remembered on it."""
    cached = getattr(app, "_aml_trigger_functions", None)
    if cached is None:
        cached = list(app.get_functions())
        app._aml_trigger_functions = cached
    return cached


def is_deferred(user: Callable[..., Any], arg_name: str) -> bool:
    """Whether the Python worker binds `arg_name` as a deferred SDK type: as it does,
    read the resolved annotation and ask the base extension's registry (the worker's
    `check_deferred_bindings_enabled`)."""
    try:
        from azurefunctions.extensions.base import get_binding_registry
    except ImportError:  # no extension installed: the worker binds the classic types
        return False
    annotation = typing.get_type_hints(user).get(arg_name)
    return get_binding_registry().check_supported_type(annotation)


def route_pattern(template: str, *, catch_all: bool = False) -> re.Pattern[str]:
    """`runs/{run_id}` -> a regex with named groups. `{x:constraint}` constraints are
    ignored, `{x?}` is optional, `{*x}` takes the rest; in blob paths every
    parameter may span folders (`{name}` is the whole blob name)."""
    out, pos = "", 0
    for found in re.finditer(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(\?)?(?::[^}]*)?\}", template):
        out += re.escape(template[pos : found.start()])
        star, param, optional = found.groups()
        body = ".+" if (star or catch_all) else "[^/]+"
        out += f"(?P<{param}>{body}){'?' if optional else ''}"
        pos = found.end()
    out += re.escape(template[pos:])
    return re.compile(out)


def _caller(user: Callable[..., Any], arg_name: str) -> Callable[[Any], Any]:
    def call(value: Any) -> Any:
        return user(**{arg_name: value})

    return call


def _text(value: Any) -> str:
    return str(getattr(value, "value", value))
