"""Dumps switched on and off: what ``init()`` installs from the settings and
``shutdown()`` removes.

- ``dumps``: the active-span registry, the dump thread (when the dump signal or the
  watchdog needs it), the dump signal, the ``stuck_after`` watchdog and its
  ``obskit_stuck_spans_total``, tracemalloc for ``dump_tracemalloc``;
- ``crash_logs``: faulthandler and the unhandled-exception hooks (:mod:`.crashes`).

After ``fork()`` the child forgets the parent's thread, pipe and faulthandler
registration; the child's ``init()`` (or obskit's re-initialisation after fork) makes
its own.
"""

from __future__ import annotations

import contextlib
import threading

from obskit._config.settings import Settings
from obskit._dumps import active_spans, crashes, dump_signal, heap, watchdog
from obskit._dumps import worker_timeout as worker_timeout  # imported before any abort
from obskit._dumps.dump_thread import DumpThread
from obskit._lifecycle import after_fork
from obskit._lifecycle import internal_errors as _internal_errors

__all__ = ["after_gunicorn_worker_init", "install", "uninstall"]

_thread: DumpThread | None = None
_settings: Settings | None = None
_lock = threading.RLock()


@after_fork.in_child
def _forget_the_parents_dumps() -> None:
    global _thread, _lock
    _lock = threading.RLock()
    dump_signal.forget_after_fork()  # (first: faulthandler writes to the pipe)
    thread, _thread = _thread, None
    if thread is not None:
        thread.close()


def install(settings: Settings) -> None:
    """Switch dumps and crash hooks on or off as ``settings`` say (never raises)."""
    global _settings
    try:
        with _lock:
            _settings = settings
            _install_dumps(settings)
            if settings.crash_logs:
                crashes.install()
            else:
                crashes.uninstall()
    except Exception as error:
        _internal_errors.report("dumps", error)


def _install_dumps(settings: Settings) -> None:
    global _thread
    if not settings.dumps:
        _uninstall_dumps()
        return
    active_spans.switch(True)
    signal_name = settings.dump_signal
    needs_thread = signal_name != "none" or settings.stuck_after > 0
    thread = _thread
    if needs_thread and thread is None:
        thread = _thread = DumpThread()
        thread.start()
    if thread is not None:
        thread.configure(settings.dump_heap, settings.stuck_after)
    if signal_name != "none" and thread is not None:
        dump_signal.install(signal_name, thread.write_fd)
    else:
        dump_signal.uninstall()
    if not needs_thread and thread is not None:
        _thread = None
        thread.stop()
    if settings.stuck_after > 0:
        watchdog.stuck_counter()  # on /metrics at 0 from the start
    if settings.dump_tracemalloc:
        heap.start_tracing(settings.dump_tracemalloc)
    else:
        heap.stop_tracing()


def _uninstall_dumps() -> None:
    global _thread
    active_spans.switch(False)
    dump_signal.uninstall()  # (before the pipe it writes to is closed)
    thread, _thread = _thread, None
    if thread is not None:
        thread.stop()
    heap.stop_tracing()


def uninstall() -> None:
    """Undo :func:`install` (``shutdown()``; never raises)."""
    global _settings
    try:
        with _lock:
            _settings = None
            _uninstall_dumps()
            crashes.uninstall()
    except Exception as error:
        with contextlib.suppress(Exception):
            _internal_errors.report("dumps", error)


def after_gunicorn_worker_init() -> None:
    """In a gunicorn worker, after it set its own signal handlers: obskit's dump signal
    in front of them again (``--preload``: it was installed before), restarting system
    calls as gunicorn has ``SIGUSR1`` do."""
    try:
        with _lock:
            settings, thread = _settings, _thread
            if settings is None or thread is None or settings.dump_signal == "none":
                return
            dump_signal.install(settings.dump_signal, thread.write_fd)
            if settings.dump_signal == "sigusr1":
                dump_signal.keep_system_calls_running()
    except Exception as error:
        _internal_errors.report("dumps", error)
