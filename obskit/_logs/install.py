"""Installing the log pipeline into the process: root ``logging`` handlers and structlog.

Kept apart from ``_logs`` (which only builds and renders) because this is the part
that changes process-wide state, and must undo it: ``uninstall()`` puts back the
root handlers, root level and structlog configuration found by the first install.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any

import structlog

from obskit._config.settings import Settings
from obskit._logs.pipeline import BridgeHandler, pipeline, structlog_settings


@dataclass
class _Saved:
    handlers: list[logging.Handler]
    level: int
    structlog_config: dict[str, Any]


_saved: _Saved | None = None
_bridge: BridgeHandler | None = None


def install(settings: Settings, fields: dict[str, str]) -> None:
    """Point obskit's loggers, structlog and (optionally) the root logger at one pipeline."""
    global _saved, _bridge
    stream = getattr(sys, settings.log_stream)
    renderer = settings.log_format
    if renderer == "auto":
        renderer = "console" if _isatty(stream) else "json"
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
    if settings.log_stdlib:
        if _bridge is None:
            _bridge = BridgeHandler(shared)
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        root.addHandler(_bridge)
        root.setLevel(settings.log_level.upper())
    else:
        _restore_root()


def uninstall() -> None:
    """Put back what the first ``install()`` found; reset the pipeline to its defaults."""
    global _saved, _bridge
    if _saved is None:
        return
    _restore_root()
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
