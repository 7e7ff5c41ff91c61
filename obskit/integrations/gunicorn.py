"""gunicorn server hooks: multi-worker metrics (with exemplars), post-fork tracing, flush.

Enable them with one line in ``gunicorn.conf.py``::

    from obskit.integrations.gunicorn import *

or call them from your own hooks (``on_starting(server)``, ``post_fork(server, worker)``,
``child_exit(server, worker)``, ``worker_exit(server, worker)``, ``post_worker_init(worker)``,
``worker_abort(worker)``).

``worker_abort`` turns ``WORKER TIMEOUT`` into one error line per request the worker was
serving (stack, trace id, route) and ends its span as an error, exported before the
worker exits; ``post_worker_init`` keeps obskit's dump signal working in workers that set
their own handlers after a ``--preload`` master forked them. ``kill -USR1 <master>``
dumps every worker: gunicorn's master passes ``SIGUSR1`` on to each worker itself.

Importing this module (which gunicorn does when it reads its config file, before it
loads the app even with ``--preload``) turns on prometheus-client's multiprocess
mode: it sets ``PROMETHEUS_MULTIPROC_DIR`` (a fresh directory under
``OBSKIT_MULTIPROC_BASE`` or the system temp dir, unless you set one) and wipes it,
before any worker imports prometheus-client. Then every worker's ``/metrics`` shows
all workers' metrics merged, with exemplars.

``/metrics`` has a port of its own, one per pod: ``on_starting`` starts a small server
process beside the master (``metrics_port``, 9464 by default, from ``OBSKIT_METRICS_PORT``
and ``OBSKIT_METRICS_ADDR`` in gunicorn's environment; ``0``: none) that serves every
worker's metrics merged and leaves with the master. ``obskit.init()`` in the master
(``--preload``) or in the workers then starts no server of its own.

Nothing here can end the gunicorn master: everything ``child_exit`` needs is imported
with this module (gunicorn 22 and 23 run ``child_exit`` inside their SIGCHLD handler,
which may interrupt anything, an import included), a ``child_exit`` that interrupts
another one leaves its worker to the one it interrupted, and compaction never maps a
file nor raises. A directory that cannot be prepared (read-only, gone) is logged, not
fatal: metric updates then degrade as :mod:`obskit._metrics.file_values` describes.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import sys
import tempfile
from types import FrameType
from typing import Any

import obskit

__all__ = [
    "child_exit",
    "logger_class",
    "on_exit",
    "on_starting",
    "post_fork",
    "post_worker_init",
    "worker_abort",
    "worker_exit",
]

#: gunicorn's own error and access loggers write through obskit's non-blocking writer.
logger_class = "obskit.integrations.gunicorn_logging.Logger"

_ENV = "PROMETHEUS_MULTIPROC_DIR"
_created: str | None = None  # a directory this module made (removed again on exit)
_log = logging.getLogger("obskit")
#: Files of an earlier run that a new master removes (metric files, exemplar files,
#: compaction's temporary files).
_STALE = ("*.db", "*.obskit", "*.db.tmp")


def prepare_multiprocess_dir() -> str | None:
    """Create (or wipe) the multiprocess directory and export it; return its path.

    A directory that cannot be created or wiped is logged and left as it is (None when
    no directory could be made: prometheus-client then stays in single-process mode).
    """
    global _created
    path = os.environ.get(_ENV)
    try:
        if path:
            os.makedirs(path, exist_ok=True)
            for pattern in _STALE:
                for stale in glob.glob(os.path.join(path, pattern)):
                    os.remove(stale)
        else:
            base = os.environ.get("OBSKIT_MULTIPROC_BASE") or tempfile.gettempdir()
            os.makedirs(base, exist_ok=True)
            path = tempfile.mkdtemp(prefix="obskit-metrics-", dir=base)
            os.environ[_ENV] = path
            _created = path
    except OSError as error:
        _log.warning(
            "obskit: could not prepare the metrics directory %s (%s); metric updates the "
            'directory does not take are counted in obskit_dropped_total{signal="metrics"}',
            path or os.environ.get("OBSKIT_MULTIPROC_BASE") or tempfile.gettempdir(),
            error,
        )
    return path or None


prepare_multiprocess_dir()

# What the master's hooks need, imported now, after the directory is set (prometheus-
# client decides its multiprocess mode when it is first imported) and before gunicorn
# forks anything: no hook imports anything later.
from obskit._metrics import file_values as _file_values  # noqa: E402
from obskit._metrics import multiprocess as _multiprocess  # noqa: E402
from obskit._metrics import pod_server as _pod_server  # noqa: E402
from obskit._metrics import server as _server  # noqa: E402

_file_values.install()  # obskit's value class for every metric made from now on


class _PodServer:
    """The pod's ``/metrics`` server process, as :data:`obskit._metrics.server.master`
    describes it. Its address is read from the environment when asked: after gunicorn
    has applied ``--env``/``raw_env``, which it does after reading this file."""

    def __init__(self) -> None:
        self.process: Any = None

    def address(self) -> tuple[str, int] | None:
        from obskit._config.settings import load_only

        wanted = load_only(os.environ, "metrics_addr", "metrics_port", "disabled")
        sdk_disabled = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
        if wanted["disabled"] or sdk_disabled or not wanted["metrics_port"]:
            return None
        return _server.bind_address(wanted["metrics_addr"]), wanted["metrics_port"]

    def started(self) -> bool:
        return self.process is not None


_pod = _PodServer()
_server.master = _pod  # from now on, init() leaves /metrics to the master's server


def on_starting(server: Any) -> None:
    """Master start: make sure the multiprocess directory exists (already done at import)
    and start the pod's ``/metrics`` server process."""
    if not os.environ.get(_ENV):
        prepare_multiprocess_dir()
    address = _pod.address()
    if address is not None and _pod.process is None:
        _pod.process = _pod_server.launch(*address)


def post_fork(server: Any, worker: Any) -> None:
    """In each new worker: obskit's own after-fork hook has already rebuilt tracing
    (fresh exporter and thread, this worker's ``process.pid``); nothing else to do."""


def child_exit(server: Any, worker: Any) -> None:
    """In the master, when a worker died: drop its live gauges and exemplars, and fold
    its metric files into the merged ones so the file count stays bounded (never raises:
    a failure is counted and logged, and the worker's files are kept)."""
    path = os.environ.get(_ENV)
    if path:
        _multiprocess.compact(path, worker.pid)


def on_exit(server: Any) -> None:
    """Master exit: stop the ``/metrics`` server process, and remove the multiprocess
    directory if obskit created it."""
    _pod_server.stop(_pod.process)
    _pod.process = None
    if _created and os.environ.get(_ENV) == _created:
        shutil.rmtree(_created, ignore_errors=True)


def worker_exit(server: Any, worker: Any) -> None:
    """In a worker that is stopping (also on SIGTERM): flush and shut obskit down."""
    obskit.shutdown()


def post_worker_init(worker: Any) -> None:
    """In each worker, once it has loaded the app and set its own signal handlers: put
    obskit's dump signal back in front of them (with ``--preload`` obskit installed it
    before the worker set its own). The master passes ``SIGUSR1`` to every worker itself
    (``kill -USR1 <master>``: each worker writes a dump), and runs no obskit code for it."""
    if "obskit._dumps.install" in sys.modules:
        from obskit._dumps import install as _dumps

        _dumps.after_gunicorn_worker_init()


def worker_abort(worker: Any) -> None:
    """In a worker gunicorn aborts (``WORKER TIMEOUT``: it sends ``SIGABRT``): one error
    line per request still running, with its stack, trace id and route; its span ended
    as an error (``error.type="worker_timeout"``) and exported before the worker exits."""
    report = sys.modules.get("obskit._dumps.worker_timeout")  # (imported by init())
    if report is None:
        return
    timeout = getattr(getattr(worker, "cfg", None), "timeout", None)
    report.report(_interrupted_frame(), timeout if isinstance(timeout, (int, float)) else None)


def _interrupted_frame() -> FrameType | None:
    """The frame gunicorn's ``SIGABRT`` handler interrupted (the request's stack, for a
    request served on the main thread), or None if the handler is not found."""
    frame: FrameType | None = sys._getframe(1)
    for _ in range(16):
        if frame is None:
            return None
        if frame.f_code.co_name == "handle_abort" and str(
            frame.f_globals.get("__name__", "")
        ).startswith("gunicorn."):
            return frame.f_back
        frame = frame.f_back
    return None
