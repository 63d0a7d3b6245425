"""The process-wide TriggerService the functions use, built once from app settings.

Built on first use, not at import, so indexing function_app never fails on a bad
setting or loads the submitter; the error then surfaces as a 503 naming the
setting. Tests and the CLI `install` a service of their own.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_service = None


def service():  # -> triggers.service.TriggerService
    global _service
    with _lock:
        if _service is None:
            _service = build_service()
        return _service


def install(service) -> None:
    """Use this service (tests, the local host, the CLI) instead of building one."""
    global _service
    with _lock:
        _service = service


def reset() -> None:
    install(None)


def build_service(settings=None, *, submitter=None):
    from pipeline.settings import Settings
    from pipeline.storage import open_storage
    from triggers.drops import DropBook
    from triggers.ledger import RunLedger
    from triggers.notify import CallbackNotifier
    from triggers.queues import DROP_QUEUE, open_queue
    from triggers.service import TriggerService
    from triggers.state import open_state

    settings = settings or Settings.from_env()
    if submitter is None:
        from pipeline.backends import make_submitter

        submitter = make_submitter(settings)
    state = open_state(settings)
    return TriggerService(
        settings,
        submitter,
        RunLedger(state),
        DropBook(state),
        open_storage(settings),
        CallbackNotifier(local=is_local(settings)),
        drop_queue=open_queue(settings, DROP_QUEUE),
    )


def is_local(settings) -> bool:
    """Running on a laptop: http callbacks to loopback are fine. In App Service
    (WEBSITE_INSTANCE_ID) or with the Azure ML backend, callbacks must be public."""
    return settings.pipeline_backend == "local" and not settings.running_in_azure
