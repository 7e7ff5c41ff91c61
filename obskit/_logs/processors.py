"""obskit's structlog processors: the fields of the log line contract, one processor each.

``timestamp`` (RFC 3339 UTC), ``level``, ``logger``, ``trace_id``/``span_id`` whenever a
valid span is current (sampled or not), and exceptions as ``exception.type``/
``exception.message``/``exception.stacktrace`` (the OpenTelemetry semantic-convention
names). The chains that put them together are :class:`obskit._logs.pipeline.Pipeline`'s;
:mod:`obskit._fast.log_lines` renders the same fields without running the chain.
"""

from __future__ import annotations

import datetime
import sys
import time
import traceback
from collections.abc import Callable, MutableMapping
from typing import Any

from opentelemetry.trace import get_current_span

from obskit._logs.json_render import safe_repr
from obskit._terminal import escape_block, escape_controls
from obskit._traces.ids import hex_ids

EventDict = MutableMapping[str, Any]
Processor = Callable[[Any, str, EventDict], Any]

#: structlog method names and the level each logs at.
METHODS = {
    "debug": "debug",
    "info": "info",
    "msg": "info",
    "warning": "warning",
    "warn": "warning",
    "error": "error",
    "exception": "error",
    "critical": "critical",
    "fatal": "critical",
}

#: "000" to "999": the microseconds as two table lookups (cheaper than "%06d").
DIGITS3 = tuple(f"{n:03d}" for n in range(1000))

#: (whole second, its "YYYY-MM-DDTHH:MM:SS" text): the date part of the last timestamp.
_last_second: tuple[int, str] = (-1, "")


def second_text(second: int) -> str:
    """``second`` (epoch seconds) as ``YYYY-MM-DDTHH:MM:SS`` in UTC, cached per second."""
    global _last_second
    cached = _last_second
    if cached[0] != second:
        moment = datetime.datetime.fromtimestamp(second, datetime.timezone.utc)
        cached = _last_second = (second, moment.strftime("%Y-%m-%dT%H:%M:%S"))
    return cached[1]


def utc_now_iso() -> str:
    """Now as RFC 3339 UTC with microseconds (no fraction at a whole second, as
    ``datetime.isoformat()`` writes it), without building a datetime per line."""
    second, micro = divmod(time.time_ns() // 1000, 1_000_000)
    cached = _last_second
    text = cached[1] if cached[0] == second else second_text(second)
    if not micro:
        return text + "Z"
    return f"{text}.{DIGITS3[micro // 1000]}{DIGITS3[micro % 1000]}Z"


def rfc3339(created: float) -> str:
    """``created`` (a LogRecord's epoch seconds) as RFC 3339 UTC with microseconds."""
    second, micro = divmod(round(created * 1_000_000), 1_000_000)
    return f"{second_text(second)}.{micro:06d}Z"


def add_timestamp(logger: Any, method: str, event: EventDict) -> EventDict:
    """Set ``timestamp`` to now (:func:`utc_now_iso`)."""
    event["timestamp"] = utc_now_iso()
    return event


def add_level(logger: Any, method: str, event: EventDict) -> EventDict:
    """Set ``level`` from the method called (``exception`` -> ``error``, ``warn`` -> ...)."""
    event["level"] = METHODS.get(method, method)
    return event


def add_logger_name(logger: Any, method: str, event: EventDict) -> EventDict:
    """Set ``logger`` to the output's name (structlog.get_logger(name)) unless bound."""
    name = getattr(logger, "name", None)
    if name is not None and "logger" not in event:
        event["logger"] = name
    return event


def add_trace_context(logger: Any, method: str, event: EventDict) -> EventDict:
    """Add ``trace_id``/``span_id`` of the current span when it is valid (sampled or not)."""
    context = get_current_span().get_span_context()
    if context.is_valid:
        _, event["trace_id"], event["span_id"] = hex_ids(context)
    return event


def _pop_exc_info(event: EventDict) -> tuple[Any, Any, Any] | None:
    """The event's ``exc_info`` (removed from it) as a ``sys.exc_info()`` triple: an
    exception, a triple, or any true value for the exception being handled; None when
    there is no exception."""
    exc_info = event.pop("exc_info", None)
    if not exc_info:
        return None
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    elif not isinstance(exc_info, tuple):
        exc_info = sys.exc_info()
    return None if exc_info[0] is None else exc_info


def add_exception_fields(logger: Any, method: str, event: EventDict) -> EventDict:
    """Turn ``exc_info`` into ``exception.type``/``.message``/``.stacktrace`` fields."""
    exc_info = _pop_exc_info(event)
    if exc_info is None:
        return event
    kind, error, trace = exc_info
    event["exception.type"] = f"{kind.__module__}.{kind.__qualname__}".removeprefix("builtins.")
    try:
        event["exception.message"] = str(error)
    except Exception:
        event["exception.message"] = safe_repr(error)
    try:
        event["exception.stacktrace"] = "".join(traceback.format_exception(kind, error, trace))
    except Exception:
        event["exception.stacktrace"] = "<traceback could not be formatted>"
    return event


def short_trace(logger: Any, method: str, event: EventDict) -> EventDict:
    """Console only, just before the console renderer: show 8 hex digits of the trace id
    instead of both full ids, and make every field safe for a terminal
    (:func:`console_safe`)."""
    trace_id = event.pop("trace_id", None)
    event.pop("span_id", None)
    if trace_id:
        event["trace"] = trace_id[:8]
    return console_safe(event)


#: Console fields printed on lines of their own, after the line (as structlog's
#: ConsoleRenderer does): their line breaks are kept, each line indented.
_BLOCKS = ("exception", "stack")


def console_safe(event: EventDict) -> dict[str, Any]:
    """The event with every key and value as text with its control characters escaped
    (:func:`obskit._terminal.escape_controls`): a URL path or header read from a request
    can neither forge a second console line nor send a terminal escape sequence.

    Values that are not strings become their ``repr()`` (what the console renderer
    would print); ``exc_info`` becomes the formatted ``exception`` text, and that and
    ``stack`` keep their lines, each escaped and indented
    (:func:`obskit._terminal.escape_block`).
    """
    exc_info = _pop_exc_info(event)
    if exc_info is not None:
        try:
            event["exception"] = "".join(traceback.format_exception(*exc_info))
        except Exception:
            event["exception"] = "<traceback could not be formatted>"
    safe: dict[str, Any] = {}
    for key, value in event.items():
        name = escape_controls(key if isinstance(key, str) else safe_repr(key))
        if isinstance(value, str):
            text = value
        elif key == "event":  # the renderer shows the message with str()
            try:
                text = str(value)
            except Exception:
                text = safe_repr(value)
        else:
            text = safe_repr(value)
        if name in _BLOCKS:
            safe[name] = escape_block(text.rstrip("\n"))
        else:
            safe[name] = escape_controls(text)
    return safe
