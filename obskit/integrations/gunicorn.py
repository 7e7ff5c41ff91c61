"""gunicorn server hooks: multi-worker metrics (with exemplars), post-fork tracing, flush.

Enable them with one line in ``gunicorn.conf.py``::

    from obskit.integrations.gunicorn import *

or call them from your own hooks (``on_starting(server)``, ``post_fork(server, worker)``,
``child_exit(server, worker)``, ``worker_exit(server, worker)``).

Importing this module (which gunicorn does when it reads its config file, before it
loads the app even with ``--preload``) turns on prometheus-client's multiprocess
mode: it sets ``PROMETHEUS_MULTIPROC_DIR`` (a fresh directory under
``OBSKIT_MULTIPROC_BASE`` or the system temp dir, unless you set one) and wipes it,
before any worker imports prometheus-client. Then every worker's ``/metrics`` shows
all workers' metrics merged, with exemplars.

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
import tempfile
from typing import Any

import obskit

__all__ = ["child_exit", "logger_class", "on_exit", "on_starting", "post_fork", "worker_exit"]

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

_file_values.install()  # obskit's value class for every metric made from now on


def on_starting(server: Any) -> None:
    """Master start: make sure the multiprocess directory exists (already done at import)."""
    if not os.environ.get(_ENV):
        prepare_multiprocess_dir()


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
    """Master exit: remove the multiprocess directory if obskit created it."""
    if _created and os.environ.get(_ENV) == _created:
        shutil.rmtree(_created, ignore_errors=True)


def worker_exit(server: Any, worker: Any) -> None:
    """In a worker that is stopping (also on SIGTERM): flush and shut obskit down."""
    obskit.shutdown()
