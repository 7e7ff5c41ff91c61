"""After ``fork()``: the one registry of what a forked child must renew, then tracing.

A lock held by another thread at the moment of fork stays held forever in the child,
where that thread does not exist; so each module that owns a lock (or per-process
state) registers a callback with :func:`in_child`, and the child runs them all, in
registration order, before anything else. Then, if obskit was initialised before the
fork (gunicorn ``--preload``, multiprocessing, Celery prefork), the child builds its own
exporter and export thread, with its own ``process.pid`` in the resource.
OpenTelemetry's batch processor already empties its queue in the child, so a span
buffered before the fork is exported once, by the parent.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

__all__ = ["after_fork_in_child", "in_child", "register"]

#: What a forked child runs first, in registration order.
_callbacks: list[Callable[[], None]] = []
_hooked = False


def in_child(callback: Callable[[], None]) -> Callable[[], None]:
    """Run ``callback`` in every child forked from now on (usable as a decorator).

    Called by a module for the locks and per-process state it owns, when it is
    imported; the process-wide hook is installed by :func:`register` (at ``init()``,
    or by a module when it makes per-process state before that).
    """
    _callbacks.append(callback)
    return callback


def register() -> None:
    """Install the process-wide after-fork hook (once per process)."""
    global _hooked
    if not _hooked and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=after_fork_in_child)
        _hooked = True


def after_fork_in_child() -> None:
    """The hook: every registered callback, then tracing re-initialised for this process."""
    for callback in list(_callbacks):
        try:
            callback()
        except Exception as error:  # never break the child process
            _report(error)
    try:
        from obskit._lifecycle import runtime as _runtime

        _runtime.reinit_after_fork()
    except Exception as error:
        _report(error)


def _report(error: Exception) -> None:
    from obskit._lifecycle import internal_errors as _internal_errors

    with contextlib.suppress(Exception):
        _internal_errors.report("fork", error)
