"""uvicorn's own multi-process mode (``uvicorn --workers N``): say once when its workers
cannot share their metrics.

uvicorn's supervisor spawns each worker as a fresh interpreter (``multiprocessing``'s
spawn: no fork, no hook, and the supervisor never imports the app). Workers share their
metrics through prometheus-client's multiprocess mode, which needs
``PROMETHEUS_MULTIPROC_DIR`` set to an empty directory before uvicorn starts (the workers
inherit it); each worker's ``init()`` then offers the dedicated metrics port, the first
one serves it, with every worker's metrics and exemplars merged from the directory, and
another takes it over within seconds if that worker exits. Without the directory each
worker counts only its own requests and the port shows one worker's share:
:func:`check_workers` logs a warning naming the fix, from the first worker only.

How it knows, without importing uvicorn: uvicorn's worker runs the app under
``uvicorn._subprocess.subprocess_started``, whose ``config`` argument is the resolved
configuration (``config.workers``); the first worker is ``SpawnProcess-1``.
"""

from __future__ import annotations

import inspect
import logging
import multiprocessing
import os
from collections.abc import Mapping
from types import FrameType

#: The variable that turns on prometheus-client's multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Frames walked up the stack at most, looking for uvicorn's worker.
MAX_FRAMES = 200

WARNING = (
    "obskit: uvicorn runs {workers} workers but PROMETHEUS_MULTIPROC_DIR is not set, so"
    " each worker keeps its own metrics and a scrape of /metrics sees only one worker's"
    " share. Fix: start uvicorn with PROMETHEUS_MULTIPROC_DIR set to an empty directory"
    " (or run the app under gunicorn with uvicorn-worker and obskit's gunicorn hooks)"
)

_warned = False
_log = logging.getLogger("obskit")


def uvicorn_workers(frame: FrameType | None) -> int | None:
    """The number of workers of the uvicorn supervisor this worker runs under (None:
    not a uvicorn worker, or unknown)."""
    depth = 0
    while frame is not None and depth < MAX_FRAMES:
        code = frame.f_code
        if code.co_name == "subprocess_started" and "uvicorn" in code.co_filename:
            workers = getattr(frame.f_locals.get("config"), "workers", None)
            return workers if isinstance(workers, int) else None
        frame = frame.f_back
        depth += 1
    return None


def check_workers(environ: Mapping[str, str] | None = None) -> None:
    """Log :data:`WARNING` once, in uvicorn's first worker, when uvicorn runs several
    workers without a multiprocess directory. Never raises."""
    global _warned
    try:
        environ = os.environ if environ is None else environ
        if _warned or environ.get(MULTIPROC_ENV):
            return
        workers = uvicorn_workers(inspect.currentframe())
        if workers is None or workers < 2:
            return
        _warned = True
        if multiprocessing.current_process().name == "SpawnProcess-1":
            _log.warning(WARNING.format(workers=workers))
    except Exception:
        _log.debug("obskit: the uvicorn check failed", exc_info=True)


class AccessLines(logging.Filter):
    """On the ``uvicorn.access`` logger: drops uvicorn's per-request line while obskit
    writes its own access line for the request (with the trace id)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from obskit._http.server_request import current_telemetry

        telemetry = current_telemetry()
        return telemetry is None or not telemetry.settings.http_access_log


def install_access_filter() -> None:
    """Put one :class:`AccessLines` on the ``uvicorn.access`` logger (once per process)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, AccessLines) for f in access.filters):
        access.addFilter(AccessLines())
