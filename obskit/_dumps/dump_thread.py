"""The one thread that writes dumps asked for by the dump signal, and runs the
stuck-span watchdog.

It sleeps in ``select()`` on a pipe: the dump signal writes to it (see
:mod:`obskit._dumps.dump_signal`: faulthandler's traceback text at C level, then one
:data:`~obskit._dumps.dump_signal.PYTHON_MARK` byte from the Python handler), and
:meth:`DumpThread.stop` writes :data:`STOP_MARK`. With the watchdog on it also wakes
every :func:`~obskit._dumps.watchdog.interval` seconds to check for stuck spans.

A signal usually arrives both ways: faulthandler's text wakes the thread at once (a
*credit*), and the Python handler's byte, which follows when the main thread next runs
Python code, uses that credit up instead of asking for a second dump. A byte without a
credit (faulthandler's handler was replaced, or the signal reached a thread that runs
no Python code, where faulthandler writes nothing) asks for a dump itself.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
import time

from obskit._dumps import dump_lines
from obskit._dumps.dump_signal import PYTHON_MARK
from obskit._dumps.watchdog import Watchdog
from obskit._lifecycle import internal_errors as _internal_errors

__all__ = ["STOP_MARK", "DumpThread"]

#: The byte that tells the thread to end.
STOP_MARK = b"\x02"
#: What faulthandler writes once per traceback (its header line).
_FAULTHANDLER_HEADER = b"most recent call first"
#: Credits kept at most (signals faulthandler saw whose Python handler has not run yet).
MAX_CREDITS = 64


class DumpThread:
    """The dump thread and its pipe (both made by :meth:`start`)."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)  # a signal handler never waits on it
        #: Add the heap summary to dumps asked for by the signal.
        self.heap = False
        self.watchdog: Watchdog | None = None
        self.credits = 0
        self._stopping = False
        self._next_check = 0.0
        self.thread = threading.Thread(target=self._run, name="obskit-dumps", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self.thread.start()

    def configure(self, heap: bool, stuck_after: float) -> None:
        """Heap summaries on signal dumps or not; the watchdog's threshold (0: off)."""
        self.heap = heap
        watchdog = self.watchdog
        if not stuck_after:
            self.watchdog = None
        elif watchdog is None or watchdog.stuck_after != stuck_after:
            self.watchdog = Watchdog(stuck_after)
            self._next_check = 0.0
        self.wake(b"\x00")  # (the wait's timeout may have changed)

    def wake(self, mark: bytes) -> None:
        """Write ``mark`` to the pipe (never blocks; a full pipe already wakes the thread)."""
        with contextlib.suppress(OSError):
            os.write(self.write_fd, mark)

    def stop(self, timeout: float = 2.0) -> None:
        """End the thread (waiting at most ``timeout`` s), then close the pipe: call it
        after the dump signal no longer writes to it."""
        self._stopping = True
        self.wake(STOP_MARK)
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)
        self.close()

    def close(self) -> None:
        """Close the pipe (in a forked child: the parent's thread is not there)."""
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _run(self) -> None:
        if sys.version_info[:2] == (3, 11):
            untraced()
        while not self._stopping:
            watchdog = self.watchdog
            timeout = None
            if watchdog is not None:
                timeout = max(0.0, self._next_check - time.monotonic())
            try:
                ready, _, _ = select.select([self.read_fd], [], [], timeout)
            except (OSError, ValueError):  # the pipe was closed under it
                return
            if ready:
                data = self._read()
                if STOP_MARK in data:
                    return
                self._requests(data)
            watchdog = self.watchdog
            if watchdog is not None and time.monotonic() >= self._next_check:
                self._next_check = time.monotonic() + watchdog.interval
                try:
                    watchdog.check()
                except Exception as error:
                    _report(error)

    def _read(self) -> bytes:
        chunks = []
        for _ in range(64):  # bounded: a pipe holds 64 KiB, 16 reads empty it
            try:
                chunk = os.read(self.read_fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def _requests(self, data: bytes) -> None:
        """Dump once for what ``data`` asks (see the module's doc on credits)."""
        woken = data.count(_FAULTHANDLER_HEADER)
        dump = woken > 0
        self.credits = min(MAX_CREDITS, self.credits + woken)
        for _ in range(data.count(PYTHON_MARK)):
            if self.credits:
                self.credits -= 1
            else:
                dump = True
        if dump:
            try:
                dump_lines.write_dump("signal", heap=self.heap)
            except Exception as error:
                _report(error)


def untraced() -> None:
    """Run this thread without a trace or profile function (Python 3.11 only).

    On 3.11 a thread with a trace function (coverage, a debugger) that enters a Python
    function while a signal waits for a main thread blocked in a system call loops at
    that function's first instruction: the traced path re-checks the "eval breaker" the
    signal set, and only the main thread clears it. The dump thread is exactly the
    thread that runs then, so it must not be traced (3.12 traces differently).
    """
    sys.settrace(None)
    sys.setprofile(None)


def _report(error: Exception) -> None:
    with contextlib.suppress(Exception):  # strict mode's raise ends here: the thread lives
        _internal_errors.report("dumps", error)
