"""Installing the log pipeline into the process: root ``logging`` handlers and structlog.

Kept apart from ``_logs`` (which only builds and renders) because this is the part
that changes process-wide state, and must undo it: ``uninstall()`` puts back the
root handlers, root level and structlog configuration found by the first install.
It also filters the OpenTelemetry loggers that quote request headers in their warnings
(:class:`HeaderTextFilter`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from obskit._config.settings import Settings
from obskit._logs import writer as _writer
from obskit._logs.pipeline import BridgeHandler, pipeline, structlog_settings


@dataclass
class _Saved:
    handlers: list[logging.Handler]
    level: int
    structlog_config: dict[str, Any]


_saved: _Saved | None = None
_bridge: BridgeHandler | None = None

#: OpenTelemetry loggers whose warnings quote what a request sent: the ``baggage`` header,
#: its entries and keys (``opentelemetry.baggage.propagation``: "Baggage header `%s`
#: exceeded...", "Invalid baggage entry: `%s`"), ``tracestate`` members
#: (``opentelemetry.trace.span``'s TraceState: "Invalid key/value pair (%s, %s)"), and
#: ``OTEL_EXPORTER_OTLP_HEADERS``, which holds credentials (``opentelemetry.util.re``:
#: "Header format invalid! Header values in environment variables must be URL encoded...").
HEADER_ECHOING_LOGGERS = (
    "opentelemetry.baggage.propagation",
    "opentelemetry.baggage",
    "opentelemetry.trace.span",
    "opentelemetry.trace.propagation.tracecontext",
    "opentelemetry.util.re",
)


class HeaderTextFilter(logging.Filter):
    """Keeps the message of a record from :data:`HEADER_ECHOING_LOGGERS` but drops the
    header text it quotes: every string argument becomes ``[REDACTED]`` (numbers, such as
    a length, stay). Baggage (user ids, e-mail addresses) thus never reaches a log line,
    whichever handler writes the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_REDACTED if isinstance(a, (str, bytes)) else a for a in args)
        elif isinstance(args, Mapping):
            record.args = {
                k: _REDACTED if isinstance(a, (str, bytes)) else a for k, a in args.items()
            }
        if not isinstance(record.msg, str):  # an object's str() may quote anything
            record.msg, record.args = _REDACTED, ()
        return True


_REDACTED = "[REDACTED]"  # obskit._http.redaction.REDACTED (not imported: _http imports _logs)
_header_filter = HeaderTextFilter()


def install(settings: Settings, fields: dict[str, str]) -> None:
    """Point obskit's loggers, structlog and (optionally) the root logger at one pipeline."""
    global _saved, _bridge
    stream = getattr(sys, settings.log_stream)
    renderer = settings.log_format
    if renderer == "auto":
        renderer = "console" if _isatty(stream) else "json"
    _writer.configure(settings.log_buffer_bytes, settings.shutdown_timeout)
    shared = pipeline()
    shared.configure(
        fields=fields,
        renderer=renderer,
        max_bytes=settings.log_max_line_bytes,
        level=settings.log_level,
        stream=settings.log_stream,
        colors=renderer == "console" and _isatty(stream),
    )
    root = logging.getLogger()
    if _saved is None:
        _saved = _Saved(root.handlers[:], root.level, structlog.get_config())
    structlog.configure(**structlog_settings(shared))
    for name in HEADER_ECHOING_LOGGERS:
        logging.getLogger(name).addFilter(_header_filter)  # once: a filter is added once
    if settings.log_stdlib:
        if _bridge is None:
            _bridge = BridgeHandler(shared)
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        root.addHandler(_bridge)
        root.setLevel(settings.log_level.upper())
    else:
        _restore_root()


def uninstall(timeout: float | None = None) -> None:
    """Write the buffered lines (within ``timeout`` s: by default the installed
    ``shutdown_timeout``), put back what the first ``install()`` found and reset the
    pipeline to its defaults."""
    global _saved, _bridge
    if _saved is None:
        return
    _writer.flush(_writer.exit_timeout() if timeout is None else timeout)
    _restore_root()
    for name in HEADER_ECHOING_LOGGERS:
        logging.getLogger(name).removeFilter(_header_filter)
    structlog.configure(**_saved.structlog_config)
    _saved = None
    _bridge = None
    pipeline().configure(fields={}, renderer="json", max_bytes=16384)


def _restore_root() -> None:
    if _saved is None:
        return
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in _saved.handlers:
        root.addHandler(handler)
    root.setLevel(_saved.level)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:
        return False
