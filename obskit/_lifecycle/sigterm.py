"""SIGTERM: flush buffered spans before the process goes, then chain to the old handler.

``atexit`` does not run when a plain ``python app.py`` is killed by SIGTERM (what
Kubernetes sends first), so spans still in the batch queue would be lost. obskit's
handler flushes them within ``shutdown_timeout`` and then does what the previous
handler would have done: call it, ignore the signal, or terminate as by default.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import FrameType
from typing import Any

_previous: Any = None
_installed = False


def install() -> None:
    """Install the handler (main thread only; once). Chains to the current handler."""
    global _previous, _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    try:
        _previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not allowed here (embedded interpreter, ...)
        return
    _installed = True


def uninstall() -> None:
    """Put the previous handler back if ours is still the installed one."""
    global _installed
    if not _installed:
        return
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, _previous if _previous is not None else signal.SIG_DFL)
    except (ValueError, OSError):
        return
    _installed = False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    from obskit._lifecycle import runtime as _runtime

    telemetry = _runtime.current()
    if telemetry is not None:
        # Leaving is more important than flushing: never let an error stop the exit.
        with contextlib.suppress(Exception):
            telemetry.force_flush(timeout=telemetry.settings.shutdown_timeout)
    previous = _previous
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    else:  # SIG_DFL: terminate as the default action would
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
