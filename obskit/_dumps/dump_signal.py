"""The dump signal (``dump_signal``: ``SIGUSR1`` by default): chained with the handler
that was there, and woken at C level so a stuck main thread still gets its dump.

Python runs a signal handler in the main thread, between two bytecodes: a main thread
blocked in a system call that the kernel restarts after a signal (a socket read without
a timeout; gunicorn makes ``SIGUSR1`` restart system calls) runs it only when the call
returns, which for a stuck request is never. So obskit installs two handlers:

- a Python handler (``signal.signal``) that writes one byte (:data:`PYTHON_MARK`) to the
  dump thread's pipe and then calls the handler that was installed before (gunicorn's
  ``SIGUSR1`` handler reopens its log files; ``SIG_DFL`` or ``SIG_IGN``: nothing more);
- ``faulthandler.register(signal, file=<the pipe>, chain=True)`` in front of it, at C
  level: when the signal arrives it writes the current thread's traceback to the pipe at
  once (the dump thread wakes and dumps), then passes the signal on to Python's handler.

The dump thread pairs the two (:mod:`obskit._dumps.dump_thread`): one dump per signal.
If something later replaces the C-level handler, the Python handler's byte still asks
for the dump; if something replaces the Python handler, the signal is theirs.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["PYTHON_MARK", "SIGNALS", "forget_after_fork", "install", "uninstall"]

#: The byte the Python handler writes to the dump thread's pipe.
PYTHON_MARK = b"\x01"
#: The values of the ``dump_signal`` setting and their signals.
SIGNALS = {"sigusr1": "SIGUSR1", "sigusr2": "SIGUSR2"}

_signum: int | None = None
_previous: Any = None
_write_fd: int | None = None
#: Whether faulthandler is registered (by obskit) for ``_signum``.
_registered = False


def _on_signal(signum: int, frame: FrameType | None) -> None:
    fd = _write_fd
    if fd is not None:
        with contextlib.suppress(OSError):  # a full pipe already holds a request
            os.write(fd, PYTHON_MARK)
    previous = _previous
    if callable(previous):
        previous(signum, frame)


def install(name: str, write_fd: int) -> bool:
    """Make signal ``name`` (a ``dump_signal`` value) wake the dump thread's pipe
    ``write_fd``; return whether the Python handler is ours (main thread only).

    Installed again when a handler was put over obskit's since (gunicorn's worker sets
    its own after a ``--preload`` master forked it).
    """
    global _signum, _previous, _write_fd, _registered
    signum = int(getattr(signal, SIGNALS[name]))
    if _signum is not None and _signum != signum:
        uninstall()
    _write_fd = write_fd
    if threading.current_thread() is not threading.main_thread():
        return signal.getsignal(signum) is _on_signal
    try:
        current = signal.getsignal(signum)
        if current is not _on_signal:
            if _registered:  # faulthandler's record of the registration it replaced
                faulthandler.unregister(signum)
                _registered = False
            _previous = current
            signal.signal(signum, _on_signal)
        _signum = signum
        if hasattr(faulthandler, "register"):  # (again while registered: a new pipe)
            faulthandler.register(signum, file=write_fd, all_threads=False, chain=True)
            _registered = True
    except (ValueError, OSError, RuntimeError):  # not allowed here (embedded interpreter)
        return False
    return True


def keep_system_calls_running() -> None:
    """Make the signal restart interrupted system calls (``siginterrupt(False)``), as
    gunicorn's workers set ``SIGUSR1`` up: faulthandler's handler would not otherwise."""
    if _signum is not None and threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            signal.siginterrupt(_signum, False)


def uninstall() -> None:
    """Put the previous handler back if obskit's is still the installed one."""
    global _signum, _previous, _write_fd, _registered
    signum = _signum
    _write_fd = None
    if signum is None:
        return
    if _registered:
        with contextlib.suppress(ValueError, RuntimeError):
            faulthandler.unregister(signum)
        _registered = False
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signum) is _on_signal:
                previous = _previous
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
    _signum = None
    _previous = None


def forget_after_fork() -> None:
    """In a forked child: the pipe is the parent's; stop writing to it (the child's
    ``init()`` makes its own)."""
    global _write_fd, _registered
    _write_fd = None
    if _registered and _signum is not None:
        with contextlib.suppress(ValueError, RuntimeError):
            faulthandler.unregister(_signum)
        _registered = False


def installed() -> bool:
    """Whether obskit's Python handler is the signal's handler now."""
    return _signum is not None and signal.getsignal(_signum) is _on_signal
