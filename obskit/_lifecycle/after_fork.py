"""After ``fork()``: fresh locks, and a fresh tracing pipeline in the child.

A lock held by another thread at the moment of fork stays held forever in the child,
where that thread does not exist; so the child first replaces every lock obskit
owns. Then, if obskit was initialised before the fork (gunicorn ``--preload``,
multiprocessing), the child builds its own exporter and export thread, with its own
``process.pid`` in the resource. OpenTelemetry's batch processor already empties
its queue in the child, so a span buffered before the fork is exported once, by
the parent.
"""

from __future__ import annotations

import contextlib
import os
import threading

_registered = False


def register() -> None:
    """Install the after-fork hook (once per process; called by ``init()``)."""
    global _registered
    if not _registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=after_fork_in_child)
        _registered = True


def renew_locks() -> None:
    """Replace every lock obskit owns (some may have been held by another thread)."""
    from obskit._lifecycle import internal_errors as _internal_errors
    from obskit._lifecycle import runtime as _runtime
    from obskit._lifecycle import self_stats as _self_stats
    from obskit._logs import pipeline as _pipeline
    from obskit._metrics import registry as _registry

    _runtime._lock = threading.RLock()
    _internal_errors._lock = threading.Lock()
    _self_stats._lock = threading.Lock()
    _pipeline._pipeline_lock = threading.Lock()
    _registry._store_lock = threading.Lock()
    if _registry._store is not None:
        _registry._store._lock = threading.RLock()
    for store in _registry._exemplar_stores.values():
        store._lock = threading.Lock()


def after_fork_in_child() -> None:
    """The hook: renew locks, then re-initialise tracing for this process."""
    try:
        renew_locks()
        from obskit._lifecycle import runtime as _runtime

        _runtime.reinit_after_fork()
    except Exception as error:  # never break the child process
        from obskit._lifecycle import internal_errors as _internal_errors

        with contextlib.suppress(Exception):
            _internal_errors.report("fork", error)
