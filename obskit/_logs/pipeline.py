"""The log pipeline: structlog processor chains, the JSON/console output, the stdlib bridge.

Lines are written by :class:`~obskit._logs.writer.LineWriter` (whole lines; a pipe or
socket that stalls is buffered, never blocks the caller).

One :class:`Pipeline` (level, processor chains, output stream) is shared by every
logger obskit hands out and by the handler it puts on the root ``logging`` logger,
so structlog calls and third-party ``logging`` records render identically. ``init()``
replaces the pipeline's contents *in place*: loggers created at import time, before
``init()``, pick up the configuration when they are called.

Fields (the log line contract): ``timestamp`` (RFC 3339 UTC), ``level``, ``event``,
``logger``, ``service.name`` (+ version, environment), ``trace_id``/``span_id``
whenever a valid span is current (sampled or not), bound and passed key/values,
and exceptions as ``exception.type``/``exception.message``/``exception.stacktrace``
(the processors in :mod:`obskit._logs.processors`).

Only structlog's documented API is used here. Rendering a line without running the
chain one processor at a time, and the bound-field shortcuts, are accelerators in
:mod:`obskit._fast.log_lines`, whose entry points fall back to that API.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import structlog
from opentelemetry.trace import get_current_span

from obskit._fast import log_lines as _lines
from obskit._lifecycle import after_fork
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import self_stats as _self_stats
from obskit._logs.json_render import render_json
from obskit._logs.processors import (
    EventDict,
    Processor,
    add_exception_fields,
    add_level,
    add_logger_name,
    add_timestamp,
    add_trace_context,
    rfc3339,
    short_trace,
)
from obskit._logs.writer import LineWriter
from obskit._traces.ids import hex_ids

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
#: LogRecord attributes that are not user ``extra=`` fields.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime"}
)
#: Modules whose frames a ``stack_info=True`` stack leaves out: it ends at the app's call.
_STACK_IGNORES = ["obskit._logs", "obskit._fast"]

_write = _lines.write
_merge_bound = _lines.merge_bound

#: What a request's start calls: fields bound (``obskit.bind()``) while the previous
#: request on this thread was served are cleared (nothing to do if none ever were).
request_started = _lines.clear_bound_fields


class Pipeline:
    """What every obskit logger and the stdlib bridge share; replaced in place by init()."""

    def __init__(self) -> None:
        self.level = LEVELS["info"]
        self.writer = LineWriter()
        #: A fake clock for tests (obskit.testing): returns each line's timestamp.
        self.clock: Callable[[], str] | None = None
        self.structlog_chain: list[Processor] = []
        self.record_chain: list[Processor] = []
        #: What configure() put in the chains when it renders JSON (None for console).
        #: While a chain still equals its snapshot, its lines may be rendered by the
        #: inlined equivalent (:mod:`obskit._fast.log_lines`, :meth:`render_record`)
        #: instead of calling each processor; any change (a test's clock, an injected
        #: fault) falls back to the chain.
        self.structlog_snapshot: list[Processor] | None = None
        self.record_snapshot: list[Processor] | None = None
        #: The configured fields (service name, version, environment) every line carries.
        self.fields: dict[str, str] = {}
        #: The longest line, in bytes; longer events are truncated.
        self.max_bytes = 16384
        #: The chains' ``stack_info=True`` processor.
        self.stack_renderer: Processor = structlog.processors.StackInfoRenderer(
            additional_ignores=_STACK_IGNORES
        )
        self.configure(fields={}, renderer="json", max_bytes=16384)

    def configure(
        self,
        fields: dict[str, str],
        renderer: str,
        max_bytes: int,
        level: str = "info",
        stream: str = "stdout",
        colors: bool = False,
    ) -> None:
        """Swap the chains' contents (same list objects: existing loggers follow)."""

        def add_fields(logger: Any, method: str, event: EventDict) -> EventDict:
            for key, value in fields.items():
                event.setdefault(key, value)
            return event

        tail: list[Processor]
        if renderer == "console":
            console = structlog.dev.ConsoleRenderer(colors=colors)
            tail = [short_trace, console]
        else:

            def render(logger: Any, method: str, event: EventDict) -> str:
                return render_json(event, max_bytes)

            tail = [add_exception_fields, render]
        merge = structlog.contextvars.merge_contextvars
        stack = structlog.processors.StackInfoRenderer(additional_ignores=_STACK_IGNORES)
        self.structlog_chain[:] = [
            merge,
            add_level,
            add_logger_name,
            add_timestamp,
            add_trace_context,
            add_fields,
            stack,
            *tail,
        ]
        # Records arrive with level, logger and time already set by the bridge.
        self.record_chain[:] = [merge, add_trace_context, add_fields, *tail]
        json_output = renderer != "console"
        self.structlog_snapshot = list(self.structlog_chain) if json_output else None
        self.record_snapshot = list(self.record_chain) if json_output else None
        self.fields = dict(fields)
        self.max_bytes = max_bytes
        self.stack_renderer = stack
        self.level = LEVELS[level]
        self.writer.stream = stream
        self.clock = None

    def render_record(self, event: dict[str, Any]) -> str | None:
        """The JSON line ``record_chain`` renders for a bridged record's fields, inlined.

        None when the chain was changed since configure() (the caller runs it instead).
        """
        snapshot = self.record_snapshot
        if snapshot is None or self.record_chain != snapshot:
            return None
        _merge_bound(event)
        span_context = get_current_span().get_span_context()
        if span_context.is_valid:
            _, event["trace_id"], event["span_id"] = hex_ids(span_context)
        for key, value in self.fields.items():
            event.setdefault(key, value)
        if "exc_info" in event:
            add_exception_fields(None, "", event)
        return render_json(event, self.max_bytes)

    def use_clock(self, clock: Callable[[], str]) -> None:
        """Stamp every line with ``clock()`` instead of the time (deterministic tests)."""

        def stamp(logger: Any, method: str, event: EventDict) -> EventDict:
            event["timestamp"] = clock()
            return event

        self.clock = clock
        self.structlog_chain[:] = [stamp if p is add_timestamp else p for p in self.structlog_chain]


_pipeline: Pipeline | None = None
_pipeline_lock = threading.Lock()


@after_fork.in_child
def _renew_pipeline_lock() -> None:
    global _pipeline_lock
    _pipeline_lock = threading.Lock()


def pipeline() -> Pipeline:
    """The shared pipeline, created on first use (JSON on stdout at INFO until init())."""
    global _pipeline
    if _pipeline is None:
        with _pipeline_lock:
            if _pipeline is None:
                _pipeline = Pipeline()
    return _pipeline


# --- loggers --------------------------------------------------------------------


class Logger(structlog.BoundLoggerBase):
    """obskit's structlog bound logger: level-filtered, and never raises into the app."""

    def _log(self, method: str, level: int, event: object, args: tuple[Any, ...], kw: Any) -> Any:
        shared = _pipeline or pipeline()
        if level < shared.level:
            return None
        try:
            text = None if event is None else str(event) % args if args else str(event)
            return _write(self, shared, method, text, kw)
        except Exception as error:
            _internal_errors.report("logs", error)
            return None

    def debug(self, event: object = None, *args: Any, **kw: Any) -> Any:
        return self._log("debug", 10, event, args, kw)

    def info(self, event: object = None, *args: Any, **kw: Any) -> Any:
        return self._log("info", 20, event, args, kw)

    msg = info

    def warning(self, event: object = None, *args: Any, **kw: Any) -> Any:
        return self._log("warning", 30, event, args, kw)

    warn = warning

    def error(self, event: object = None, *args: Any, **kw: Any) -> Any:
        return self._log("error", 40, event, args, kw)

    def exception(self, event: object = None, *args: Any, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return self._log("exception", 40, event, args, kw)

    def critical(self, event: object = None, *args: Any, **kw: Any) -> Any:
        return self._log("critical", 50, event, args, kw)

    fatal = critical

    def log(self, level: int, event: object = None, *args: Any, **kw: Any) -> Any:
        name = logging.getLevelName(level).lower()
        return self._log(name if name in LEVELS else "info", level, event, args, kw)


def get_logger(name: str) -> Logger:
    """A logger named ``name`` that renders through the shared pipeline."""
    shared = pipeline()
    return Logger(shared.writer, shared.structlog_chain, {"logger": name})


class _NamedOutput:
    """What ``structlog.get_logger(name)`` writes to: the shared writer, plus a name."""

    def __init__(self, name: str | None, writer: LineWriter) -> None:
        self.name = name
        self._writer = writer

    def msg(self, line: str) -> None:
        self._writer.msg(line)

    debug = info = warning = warn = error = exception = critical = fatal = log = msg


def structlog_settings(shared: Pipeline) -> dict[str, Any]:
    """``structlog.configure()`` arguments that route structlog.get_logger() to ``shared``."""

    def factory(*args: Any) -> _NamedOutput:
        return _NamedOutput(str(args[0]) if args else None, shared.writer)

    return {
        "processors": shared.structlog_chain,
        "wrapper_class": Logger,
        "logger_factory": factory,
        "context_class": dict,
        "cache_logger_on_first_use": False,
    }


# --- stdlib bridge ----------------------------------------------------------------


class TelemetryNoiseFilter(logging.Filter):
    """At most one line per message per 10 s from the telemetry machinery itself.

    A dead collector makes OpenTelemetry's exporter log a warning for every failed
    batch; repeated identically, that would flood the log exactly when things are
    already bad. Records from ``opentelemetry.*`` and ``obskit*`` loggers with the
    same logger and message template pass once per interval; the rest are counted
    in ``obskit_dropped_total{signal="logs",reason="rate_limited"}``.
    """

    PREFIXES = ("opentelemetry", "obskit")
    INTERVAL = 10.0

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.PREFIXES) or record.name == "obskit.access":
            return True
        key = (record.name, str(record.msg))
        now = record.created
        last = self._last.get(key)
        if last is not None and now - last < self.INTERVAL:
            _self_stats.add("obskit_dropped", signal="logs", reason="rate_limited")
            return False
        self._last[key] = now
        return True


class BridgeHandler(logging.Handler):
    """Renders ``logging`` records through the shared pipeline (same fields, same ids)."""

    def __init__(self, shared: Pipeline) -> None:
        super().__init__(logging.NOTSET)
        self._pipeline = shared
        self.addFilter(TelemetryNoiseFilter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event: dict[str, Any] = {
                "event": record.getMessage(),
                "level": record.levelname.lower(),
                "logger": record.name,
                "timestamp": clock()
                if (clock := self._pipeline.clock)
                else rfc3339(record.created),
            }
            attributes = record.__dict__
            if not attributes.keys() <= _RECORD_ATTRS:
                for key, value in attributes.items():
                    if key not in _RECORD_ATTRS and not key.startswith("_"):
                        event[key] = value  # fields passed with extra={...}
            if record.exc_info:
                event["exc_info"] = record.exc_info
            if record.stack_info:
                event["stack"] = record.stack_info
            result: Any = self._pipeline.render_record(event)
            if result is None:
                result = event
                for processor in self._pipeline.record_chain:
                    result = processor(None, event["level"], result)
            self._pipeline.writer.msg(result)
        except Exception:
            _internal_errors.count("logs")

    def handle(self, record: logging.LogRecord) -> Any:
        """Filter, then emit -- without the handler lock: the writer serialises lines."""
        passed: Any = self.filter(record)
        if passed:
            self.emit(passed if isinstance(passed, logging.LogRecord) else record)
        return passed

    def handleError(self, record: logging.LogRecord) -> None:  # never print to stderr
        _internal_errors.count("logs")
