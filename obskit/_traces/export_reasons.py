"""Why an export failed: the bounded ``reason`` label of ``obskit_export_errors_total``.

OpenTelemetry's OTLP exporters only return ``FAILURE``. obskit hears each attempt
through seams their public API offers, on every supported version: the HTTP exporter
takes obskit's :class:`requests.Session` (its ``session=`` argument); the gRPC
exporter reports each failed call's status code in its own log records, which a
filter on its modules' loggers reads. Both note the outcome in a
:class:`ReasonRecorder`; the guarded exporter reads the last attempt's outcome when
the batch fails. An attempt nothing observed leaves the reason ``"failure"``.

The recorder also carries each export's deadline: obskit's session gives no request
more than the time left, and refuses one once it is spent (an exporter that retries
past its timeout then stops at its next attempt, sending nothing).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
import weakref
from typing import Any

#: HTTP status codes that get their own label value; others become ``http_4xx``/``http_5xx``.
HTTP_CODES = frozenset({400, 401, 403, 404, 405, 408, 413, 415, 429, 500, 501, 502, 503, 504})

#: Every value of ``obskit_export_errors_total{reason}`` (besides ``grpc_<status code>``).
REASONS = (
    *(f"http_{code}" for code in sorted(HTTP_CODES)),
    "http_4xx",
    "http_5xx",
    "http_other",
    "timeout",
    "connection_refused",
    "connection_reset",
    "truncated_reply",
    "dns_error",
    "tls_error",
    "connection_error",
    "unreachable",
    "exception",
    "failure",
)

#: The reasons with which a collector refuses a request as too large: the guarded
#: exporter then sends its spans in smaller requests.
TOO_LARGE = frozenset({"http_413", "grpc_resource_exhausted"})

_TIMEOUTS = frozenset(
    {"Timeout", "ReadTimeout", "ConnectTimeout", "ReadTimeoutError", "ConnectTimeoutError"}
)
_TRUNCATED = frozenset({"IncompleteRead", "ChunkedEncodingError", "ContentDecodingError"})
_DNS = frozenset({"NameResolutionError"})


def http_reason(status: int) -> str:
    """``http_<code>`` for a known status code, else its class (``http_4xx``/``http_5xx``)."""
    if status in HTTP_CODES:
        return f"http_{status}"
    if 400 <= status < 600:
        return f"http_{status // 100}xx"
    return "http_other"


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it wraps (cause, context, args, urllib3's ``reason``)."""
    seen: list[BaseException] = []
    pending = [error]
    while pending and len(seen) < 20:
        current = pending.pop()
        if any(current is known for known in seen):
            continue
        seen.append(current)
        inner: list[Any] = [current.__cause__, current.__context__]
        inner += [getattr(current, "reason", None), *current.args]
        pending += [item for item in inner if isinstance(item, BaseException)]
    return seen


def error_reason(error: BaseException) -> str:
    """The reason label for an exception raised by one export attempt."""
    chain = _chain(error)
    names = {kind.__name__ for e in chain for kind in type(e).__mro__}
    # Most specific first: urllib3's connection errors subclass its ConnectTimeoutError.
    if names & _DNS or any(isinstance(e, socket.gaierror) for e in chain):
        return "dns_error"
    if "SSLError" in names or any(isinstance(e, ssl.SSLError) for e in chain):
        return "tls_error"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection_refused"
    if names & _TRUNCATED:
        return "truncated_reply"
    if any(isinstance(e, (ConnectionResetError, BrokenPipeError)) for e in chain):
        return "connection_reset"
    if names & _TIMEOUTS or any(isinstance(e, TimeoutError) for e in chain):
        return "timeout"
    return "connection_error"


class Attempt:
    """One export's outcome so far, shared by the thread making it and any thread
    waiting for it: the last attempt's reason and the deadline (``time.monotonic()``)."""

    __slots__ = ("deadline", "reason")

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.reason: str | None = None


#: Every live recorder, for the gRPC log filter (which cannot know which one is in use).
_RECORDERS: weakref.WeakSet[ReasonRecorder] = weakref.WeakSet()


class ReasonRecorder:
    """The outcome of the export in progress on each thread."""

    def __init__(self) -> None:
        self._local = threading.local()
        _RECORDERS.add(self)

    def clear(self, deadline: float | None = None) -> Attempt:
        """Start a new export on this thread, to end by ``deadline`` (monotonic seconds)."""
        attempt = Attempt(deadline)
        self._local.attempt = attempt
        return attempt

    def current(self) -> Attempt | None:
        """This thread's export, if one was started on it."""
        attempt: Attempt | None = getattr(self._local, "attempt", None)
        return attempt

    def record(self, reason: str | None) -> None:
        attempt = self.current() or self.clear()
        attempt.reason = reason

    def reason(self) -> str | None:
        attempt = self.current()
        return None if attempt is None else attempt.reason

    def time_left(self) -> float | None:
        """Seconds until this thread's export deadline; ``None`` without one."""
        attempt = self.current()
        if attempt is None or attempt.deadline is None:
            return None
        return attempt.deadline - time.monotonic()

    def record_error(self, error: BaseException) -> None:
        try:
            self.record(error_reason(error))
        except Exception:
            self.record(None)


class DeadlinePassed(TimeoutError):
    """An export attempt refused by obskit because its export's deadline had passed."""


def refused_at_deadline(error: BaseException) -> bool:
    """Whether ``error`` is (or wraps) obskit's refusal of an attempt past the deadline."""
    return any(isinstance(e, DeadlinePassed) for e in _chain(error))


def recording_session(recorder: ReasonRecorder) -> Any:
    """A ``requests.Session`` that records each request's outcome in ``recorder`` and
    keeps each request within the export's deadline."""
    import requests

    class RecordingSession(requests.Session):
        def request(self, *args: Any, **kwargs: Any) -> Any:
            left = recorder.time_left()
            if left is not None:
                if left <= 0:
                    # The guard stopped waiting for this export: an exporter that
                    # retries past its timeout stops here, sending nothing more.
                    raise requests.exceptions.Timeout(DeadlinePassed("export deadline passed"))
                kwargs["timeout"] = _within(kwargs.get("timeout"), left)
            try:
                response = super().request(*args, **kwargs)
            except Exception as error:
                if _no_time_left(kwargs.get("timeout")):
                    # The exporter's retry came at its deadline: requests refused a zero
                    # timeout before sending anything. The attempt before it says why
                    # the export failed; if there was none, it ran out of time.
                    if recorder.reason() is None:
                        recorder.record("timeout")
                else:
                    recorder.record_error(error)
                raise
            status = response.status_code
            recorder.record(http_reason(status) if status >= 400 else None)
            return response

    return RecordingSession()


def _within(timeout: Any, left: float) -> Any:
    """requests' ``timeout`` (seconds, ``None`` or a (connect, read) pair) cut to ``left``."""
    if isinstance(timeout, tuple):
        return tuple(_within(part, left) for part in timeout)
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        return min(timeout, left)
    return left if timeout is None else timeout


def _no_time_left(timeout: Any) -> bool:
    """Whether a request's ``timeout`` (seconds, or requests' (connect, read) pair) is spent."""
    first = timeout[0] if isinstance(timeout, tuple) and timeout else timeout
    return isinstance(first, (int, float)) and not isinstance(first, bool) and first <= 0


class _GrpcStatusFilter(logging.Filter):
    """Notes the gRPC status code a failed export call logs (never drops a record).

    The OTLP/gRPC exporter logs each failed call (a transient one it retries, and the
    last) with the call's ``grpc.StatusCode`` among the record's arguments; that
    argument, not the message text, is what is read. Log records are handled on the
    thread that makes them: the exporting thread, whose current export this is.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            import grpc

            args = record.args if isinstance(record.args, tuple) else ()
            codes = [arg for arg in args if isinstance(arg, grpc.StatusCode)]
            if codes and codes[0] is not grpc.StatusCode.OK:
                reason = f"grpc_{codes[0].name.lower()}"
                for recorder in list(_RECORDERS):
                    if recorder.current() is not None:
                        recorder.record(reason)
        except Exception:
            pass
        return True


_grpc_filter = _GrpcStatusFilter()


def record_grpc_outcomes(exporter: Any, recorder: ReasonRecorder) -> bool:
    """Record the status codes of ``exporter``'s failed calls in ``recorder``, read from
    its log records; ``False`` if none of its classes comes from an exporter module.

    The filter goes on the loggers of the modules its classes come from, first, so that
    no deduplicating filter there hides a repeated failure from it. Records below the
    logger's level are never made: with the exporter's warnings and errors silenced,
    a failed gRPC export is counted as ``timeout`` or ``failure``.
    """
    _RECORDERS.add(recorder)
    modules = {kind.__module__ for kind in type(exporter).__mro__}
    seams = sorted(m for m in modules if m.startswith("opentelemetry.exporter."))
    for module in seams:
        logger = logging.getLogger(module)
        if _grpc_filter not in logger.filters:
            logger.filters.insert(0, _grpc_filter)
    return bool(seams)
