"""Why an export failed: the bounded ``reason`` label of ``obskit_export_errors_total``.

OpenTelemetry's OTLP exporters only return ``FAILURE``. obskit gives the HTTP
exporter a :class:`requests.Session` and the gRPC exporter a channel interceptor
that note the outcome of each attempt in a :class:`ReasonRecorder`; the guarded
exporter reads the last attempt's outcome when the batch fails. If an exporter
version offers neither seam, the reason stays ``"failure"``.
"""

from __future__ import annotations

import socket
import ssl
import threading
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


class ReasonRecorder:
    """The outcome of the last export attempt made on the current thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    def clear(self) -> None:
        self._local.reason = None

    def record(self, reason: str | None) -> None:
        self._local.reason = reason

    def reason(self) -> str | None:
        reason: str | None = getattr(self._local, "reason", None)
        return reason

    def record_error(self, error: BaseException) -> None:
        try:
            self.record(error_reason(error))
        except Exception:
            self.record(None)


def recording_session(recorder: ReasonRecorder) -> Any:
    """A ``requests.Session`` that records each request's outcome in ``recorder``."""
    import requests

    class RecordingSession(requests.Session):
        def request(self, *args: Any, **kwargs: Any) -> Any:
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


def _no_time_left(timeout: Any) -> bool:
    """Whether a request's ``timeout`` (seconds, or requests' (connect, read) pair) is spent."""
    first = timeout[0] if isinstance(timeout, tuple) and timeout else timeout
    return isinstance(first, (int, float)) and not isinstance(first, bool) and first <= 0


def record_grpc_outcomes(exporter: Any, recorder: ReasonRecorder) -> bool:
    """Route ``exporter``'s calls (and its re-created channels) through an interceptor
    recording each call's status code; ``False`` if this exporter version has no seam."""
    stub = getattr(exporter, "_stub", None)
    if stub is None or not hasattr(exporter, "_channel") or not hasattr(exporter, "_client"):
        return False
    import grpc

    class Interceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            outcome = continuation(details, request)
            try:
                code = outcome.code()
                ok = code is None or code == grpc.StatusCode.OK
                recorder.record(None if ok else f"grpc_{code.name.lower()}")
            except Exception:
                recorder.record(None)
            return outcome

    interceptor = Interceptor()

    def intercepted_stub(channel: Any) -> Any:
        return stub(grpc.intercept_channel(channel, interceptor))

    exporter._stub = intercepted_stub
    if exporter._channel is not None:
        exporter._client = intercepted_stub(exporter._channel)
    return True
