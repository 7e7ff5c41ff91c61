"""After ``fork()``: the one registry of what a forked child must renew, then tracing.

A lock held by another thread at the moment of fork stays held forever in the child,
where that thread does not exist; so each module that owns a lock (or per-process
state) registers a callback with :func:`in_child`, and the child runs them all, in
registration order, before anything else. Then, if obskit was initialised before the
fork (gunicorn ``--preload``, multiprocessing, Celery prefork), the child builds its own
exporter and export thread, with its own ``process.pid`` in the resource.
OpenTelemetry's batch processor already empties its queue in the child, so a span
buffered before the fork is exported once, by the parent.

Two more ways a child could hang, closed here:

- **Hooks in the wrong order.** ``os.register_at_fork`` runs the children's hooks in
  registration order. ``concurrent.futures.thread`` takes its global lock before a fork
  and re-creates it in the child's hook; OpenTelemetry's ``TracerProvider`` submits to a
  ``ThreadPoolExecutor`` in *its* child hook (to detect the new process's resource). When
  the executor module was first imported after the provider was made (Celery imports it
  late), the provider's hook ran first and waited forever for the lock the parent's
  hook still held. :func:`register` imports such modules before obskit makes any
  provider (:data:`FORK_SENSITIVE_IMPORTS`), so their hooks run first.
- **Half-done imports.** A module that another thread was importing at the moment of
  fork stays locked in the child: the modules obskit's export thread or first calls
  import lazily are imported up front, in :func:`register`.

A ``multiprocessing`` child ends with ``os._exit()`` (no ``atexit``): obskit flushes its
spans from a multiprocessing finalizer instead, registered in each child it forks.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Callable

__all__ = ["FORK_SENSITIVE_IMPORTS", "after_fork_in_child", "in_child", "register"]

#: Imported by :func:`register` (before obskit makes a tracer provider): modules whose own
#: fork hooks must run before OpenTelemetry's (``concurrent.futures.thread``), and modules
#: imported lazily by the export thread (``requests`` reads ``~/.netrc`` with ``netrc``
#: and ``shlex`` on its first request) or by a first call from any thread.
FORK_SENSITIVE_IMPORTS = (
    "concurrent.futures.thread",
    "netrc",
    "shlex",
    "obskit._traces.decorator",
)

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
    """Install the process-wide after-fork hook (once per process), after importing
    :data:`FORK_SENSITIVE_IMPORTS`."""
    global _hooked
    if _hooked or not hasattr(os, "register_at_fork"):
        return
    # Set first: the imports below reach modules that call register() at import.
    _hooked = True
    for name in FORK_SENSITIVE_IMPORTS:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    os.register_at_fork(after_in_child=after_fork_in_child)


def after_fork_in_child() -> None:
    """The hook: every registered callback, then tracing re-initialised for this process,
    then (in a ``multiprocessing`` child) a flush at its end."""
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
    try:
        _flush_when_multiprocessing_child_ends()
    except Exception as error:
        _report(error)


class _Token:
    """What multiprocessing's after-fork registry holds (it keeps weak references)."""


_token = _Token()


def _flush_when_multiprocessing_child_ends() -> None:
    """If this child is a ``multiprocessing`` process (started with fork), shut obskit down
    when its target returns: multiprocessing then runs its finalizers and ``os._exit()``s,
    skipping ``atexit`` (and with it obskit's flush)."""
    util = sys.modules.get("multiprocessing.util")
    if util is None:  # no multiprocessing in this program: not one of its children
        return
    # multiprocessing clears its finalizers when its child starts, then runs its own
    # after-fork callbacks: the finalizer is registered from one of those.
    util.register_after_fork(_token, _add_finalizer)


def _add_finalizer(_: object) -> None:
    util = sys.modules["multiprocessing.util"]
    util.Finalize(None, _shutdown_at_child_end, exitpriority=0)


def _shutdown_at_child_end() -> None:
    with contextlib.suppress(Exception):
        from obskit._lifecycle import runtime as _runtime

        _runtime.shutdown()


def _report(error: Exception) -> None:
    from obskit._lifecycle import internal_errors as _internal_errors

    with contextlib.suppress(Exception):
        _internal_errors.report("fork", error)
