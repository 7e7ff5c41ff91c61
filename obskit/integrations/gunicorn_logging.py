"""gunicorn's own loggers through obskit's line writer: the arbiter never blocks on a pipe.

gunicorn writes its error log (``--error-logfile -``, the default: stderr) and access
log (``--access-logfile -``: stdout) with ``logging.StreamHandler``, a blocking write.
When stdout/stderr is a pipe whose reader pauses (a log shipper under back-pressure),
the master blocks in the middle of handling a dead worker, and a new worker blocks on
its first line ("Booting worker"): capacity is lost until the reader resumes.

:class:`Logger` keeps gunicorn's own formats and destinations and replaces only those
stream handlers by one that writes each formatted record through
:class:`obskit._logs.writer.LineWriter`: the same non-blocking, buffered, whole-line
writer as obskit's log lines, sharing its buffer when both go to the same pipe.
Files (``--error-logfile PATH``), syslog and ``logconfig*`` handlers are left as
gunicorn made them.

obskit's gunicorn configuration (``from obskit.integrations.gunicorn import *``) sets
``logger_class`` to it; or set it yourself::

    logger_class = "obskit.integrations.gunicorn_logging.Logger"

gunicorn switches to its statsd logger only when ``logger_class`` is its default: with
``statsd_host`` set, choose which logger class you want explicitly.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from gunicorn.glogging import Logger as GunicornLogger  # type: ignore[import-untyped]

from obskit._lifecycle import internal_errors as _internal_errors
from obskit._logs.writer import LineWriter

__all__ = ["Logger", "WriterHandler"]


class WriterHandler(logging.Handler):
    """Writes each formatted record as one line through obskit's writer for ``stream``."""

    def __init__(self, stream: str, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.writer = LineWriter(stream)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.msg(self.format(record))
        except Exception:
            _internal_errors.count("log_write")

    def handleError(self, record: logging.LogRecord) -> None:  # never print to stderr
        _internal_errors.count("log_write")


class Logger(GunicornLogger):  # type: ignore[misc]
    """gunicorn's logger, with its stdout/stderr handlers writing through obskit."""

    def setup(self, cfg: Any) -> None:
        """gunicorn's setup (also run on reload), then its stream handlers swapped."""
        logs = (self.error_log, self.access_log)
        for log in logs:  # ours from a previous setup (gunicorn replaces only its own)
            for handler in list(log.handlers):
                if isinstance(handler, WriterHandler):
                    log.removeHandler(handler)
        super().setup(cfg)
        for log in logs:
            for handler in list(log.handlers):
                name = _stream_name(handler)
                if name is None:
                    continue
                replacement = WriterHandler(name, handler.level)
                replacement.setFormatter(handler.formatter)
                for each in handler.filters:
                    replacement.addFilter(each)
                log.removeHandler(handler)
                log.addHandler(replacement)


def _stream_name(handler: logging.Handler) -> str | None:
    """``stdout``/``stderr`` for a plain stream handler on one of them, else None."""
    if type(handler) is not logging.StreamHandler:  # FileHandler is a StreamHandler too
        return None
    stream = handler.stream
    if stream is sys.stderr or stream is sys.__stderr__:
        return "stderr"
    if stream is sys.stdout or stream is sys.__stdout__:
        return "stdout"
    return None
