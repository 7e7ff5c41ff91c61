"""obskit's own failures after ``init()``: counted, logged at most every 10 s, not raised.

Telemetry never breaks the app. Code on obskit's paths (export, shutdown, hooks)
catches its own errors and hands them to :func:`report`. In strict mode (the
``strict`` setting, which obskit's pytest plugin turns on) they are raised instead,
so a test suite sees every internal error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from obskit._lifecycle import after_fork
from obskit._lifecycle import self_stats as _self_stats

#: Seconds between two log lines about the same component.
LOG_INTERVAL = 10.0

_log = logging.getLogger("obskit")
_lock = threading.Lock()


@after_fork.in_child
def _renew_lock() -> None:
    global _lock
    _lock = threading.Lock()


_last_logged: dict[str, float] = {}
_strict = False


def set_strict(strict: bool) -> None:
    """Raise (``True``) or swallow (``False``) internal errors from now on."""
    global _strict
    _strict = strict


def report(component: str, error: BaseException) -> None:
    """Count an internal error of ``component``; log it if not logged recently.

    Raises:
        BaseException: ``error`` itself, in strict mode only.
    """
    now = time.monotonic()
    _self_stats.add("obskit_internal_errors", component=component)
    with _lock:
        due = now - _last_logged.get(component, -LOG_INTERVAL) >= LOG_INTERVAL
        if due:
            _last_logged[component] = now
    if due:
        _log.warning(
            "obskit internal error in %s (logged at most every %.0f s): %r",
            component,
            LOG_INTERVAL,
            error,
            exc_info=error,
        )
    if _strict:
        raise error


def count(component: str) -> None:
    """Count a failure without logging it: for the log writer, where logging would recurse."""
    _self_stats.add("obskit_internal_errors", component=component)


def internal_errors() -> dict[str, int]:
    """Internal errors counted so far, by component."""
    return {
        dict(labels)["component"]: int(amount)
        for (metric, labels), amount in _self_stats.snapshot().items()
        if metric == "obskit_internal_errors"
    }


#: Longest text obskit makes of a value that is not a valid attribute or label.
REPR_LIMIT = 4096


def safe_text(value: object, limit: int = REPR_LIMIT) -> str:
    """``str(value)`` cut to ``limit`` characters, or a placeholder if ``str()`` raises.

    For values obskit must turn into text (metric labels, span attributes of types
    OpenTelemetry rejects): a hostile ``__str__``/``__repr__`` never raises through.
    """
    try:
        text = value if type(value) is str else str(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit]


def safe_attributes(attributes: Mapping[Any, Any]) -> dict[str, Any]:
    """``attributes`` with every key a string and every value one OpenTelemetry accepts
    (a primitive or a homogeneous list of primitives); anything else becomes its text."""
    clean: dict[str, Any] = {}
    for key, value in attributes.items():
        clean[safe_text(key)] = value if _valid_attribute(value) else safe_text(value)
    return clean


def _valid_attribute(value: object) -> bool:
    if value is None or isinstance(value, (str, bool, int, float, bytes)):
        return True
    return isinstance(value, (list, tuple)) and all(
        isinstance(item, (str, bool, int, float)) for item in value
    )
