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
"""

from __future__ import annotations

import glob
import os
import tempfile
from typing import Any

__all__ = ["child_exit", "on_exit", "on_starting", "post_fork", "worker_exit"]

_ENV = "PROMETHEUS_MULTIPROC_DIR"
_created: str | None = None  # a directory this module made (removed again on exit)


def prepare_multiprocess_dir() -> str:
    """Create (or wipe) the multiprocess directory and export it; return its path."""
    path = os.environ.get(_ENV)
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")) + glob.glob(
            os.path.join(path, "*.obskit")
        ):
            os.remove(stale)
    else:
        base = os.environ.get("OBSKIT_MULTIPROC_BASE") or tempfile.gettempdir()
        os.makedirs(base, exist_ok=True)
        path = tempfile.mkdtemp(prefix="obskit-metrics-", dir=base)
        os.environ[_ENV] = path
        global _created
        _created = path
    return path


def on_starting(server: Any) -> None:
    """Master start: make sure the multiprocess directory exists (already done at import)."""
    if not os.environ.get(_ENV):
        prepare_multiprocess_dir()


def post_fork(server: Any, worker: Any) -> None:
    """In each new worker: obskit's own after-fork hook has already rebuilt tracing
    (fresh exporter and thread, this worker's ``process.pid``); nothing else to do."""


def child_exit(server: Any, worker: Any) -> None:
    """In the master, when a worker died: drop its live gauges and exemplars, and fold
    its metric files into the merged ones so the file count stays bounded."""
    path = os.environ.get(_ENV)
    if not path:
        return
    from obskit._metrics.multiprocess import compact

    try:
        compact(path, worker.pid)
    except Exception as error:  # the master must keep running
        server.log.warning("obskit: compacting metrics of worker %s failed: %r", worker.pid, error)


def on_exit(server: Any) -> None:
    """Master exit: remove the multiprocess directory if obskit created it."""
    if _created and os.environ.get(_ENV) == _created:
        import shutil

        shutil.rmtree(_created, ignore_errors=True)


def worker_exit(server: Any, worker: Any) -> None:
    """In a worker that is stopping (also on SIGTERM): flush and shut obskit down."""
    import obskit

    obskit.shutdown()


prepare_multiprocess_dir()
