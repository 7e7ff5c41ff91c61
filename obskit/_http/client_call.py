"""Framework-neutral outgoing HTTP instrumentation: one :class:`ClientCall` per request sent.

The HTTP client integrations (``obskit/integrations/http_clients/``) translate their
library's calls into :func:`begin`, :meth:`ClientCall.resent` and :meth:`ClientCall.end`;
what the contract fixes lives here once:

- a CLIENT span for each request sent, per OpenTelemetry's HTTP client conventions: named
  ``{method}`` (``HTTP`` for a method outside the standard ones), with
  ``http.request.method``, ``server.address``, ``server.port``, ``url.full`` (without
  ``user:password@``, query values redacted as for server spans), then
  ``http.response.status_code``, ``error.type`` (a status of 400 or more as text, or the
  exception's qualified class name), ``network.protocol.version`` when known, and
  ``http.request.resend_count`` on a retry or a redirect hop (each its own span);
- the configured propagators' headers (``traceparent``/``tracestate``/``baggage``) in the
  outgoing request, for the CLIENT span's context, sampled or not: the next service keeps
  the trace id for its log lines either way;
- ``http_client_request_duration_seconds{http_request_method, server_address,
  http_response_status_code}`` for every request (``""`` as the status when no response
  came), with the span's ``trace_id`` exemplar when it is sampled.

Spans are made only while a span is active (a request being served, ``@traced``,
``obskit.span()``): a call from a background thread or a script outside any span would
be a one-span trace that tells nothing the histogram does not, and pollers would flood
the tracing backend. Such a call is still timed, and still carries ``baggage`` if the
context holds some.

One span per request when libraries nest: while a call is open (a context variable), an
inner layer (a client library another one is built on) passes the call through, except
to report a retry it makes itself (:meth:`ClientCall.resent`). Nothing at all is recorded while the
library's instrumentation is off, before ``init()``, after ``shutdown()``, or while
OpenTelemetry's instrumentation suppression is set: its SDK sets it while it exports, so
an exporter's own requests are never traced.

An exception's message is not recorded (client libraries write the URL, query included,
into theirs); the caller's exception and response pass through untouched.
"""

from __future__ import annotations

import time
from asyncio import CancelledError
from collections.abc import Callable, MutableMapping
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.propagators.textmap import Setter
from opentelemetry.trace import SpanKind, Status, StatusCode, get_current_span

from obskit._fast import propagation, spans
from obskit._fast.ids import flags_and_validity
from obskit._http.methods import normalize_method, span_method
from obskit._http.redaction import redact_url
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import runtime as _runtime
from obskit._metrics.registry import ObskitHistogram, label_values, observe_trusted, store
from obskit._traces.decorator import CANCELLED_ATTRIBUTE

__all__ = [
    "COMPONENT",
    "DURATION",
    "ClientCall",
    "ClientMetrics",
    "MappingSetter",
    "begin",
    "client_metrics",
    "copied_headers",
    "current",
    "end_with_response",
    "enter_logical",
    "error_type",
    "exit_logical",
    "protocol_version",
    "set_header",
    "target",
]

DURATION = "http_client_request_duration_seconds"
#: The component name of obskit's internal errors in this module.
COMPONENT = "http_client"
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
#: OpenTelemetry's suppression keys are made by ``context.create_key(name)``: the name,
#: a dash and a random suffix. The plain names are honoured too, as OpenTelemetry's own
#: instrumentations do.
_SUPPRESSING_NAMES = frozenset({"suppress_instrumentation", "suppress_http_instrumentation"})
_SUPPRESSING_PREFIXES = tuple(name + "-" for name in sorted(_SUPPRESSING_NAMES))

#: The call open in this context: an inner layer passes through while it is.
_open: ContextVar[ClientCall | None] = ContextVar("obskit_http_client_call", default=None)
#: The requests a library's logical call (one API call, its redirects included) has
#: sent so far, in a one-item list; None outside such a call.
_hops: ContextVar[list[int] | None] = ContextVar("obskit_http_client_hops", default=None)


class ClientMetrics:
    """The client duration histogram, defined once in obskit's registry."""

    def __init__(self) -> None:
        metrics = store()
        self.duration: ObskitHistogram = metrics.define(
            "histogram",
            ObskitHistogram,
            DURATION,
            "Duration of HTTP client requests.",
            ("http_request_method", "server_address", "http_response_status_code"),
            None,
            buckets=metrics.buckets,
        )
        #: Children already looked up, by label values (real series only: the overflow
        #: series is looked up each time, so it stays counted).
        self._children: dict[tuple[str, str, str], Any] = {}

    def child(self, method: str, address: str, status: str) -> Any:
        """The histogram's child for these label values."""
        key = (method, address, status)
        found = self._children.get(key)
        if found is None:
            found = self.duration.labels(method, address, status)
            if label_values(found) == key:
                self._children[key] = found
        return found


_cached: tuple[Any, ClientMetrics] | None = None


def client_metrics() -> ClientMetrics:
    """The client metrics of the current metric store (defined on first use)."""
    global _cached
    cached = _cached
    metrics = store()
    if cached is None or cached[0] is not metrics:
        cached = _cached = (metrics, ClientMetrics())
    return cached[1]


#: (scheme, authority) -> (scheme, server.address, server.port); bounded.
_targets: dict[tuple[str, str], tuple[str, str, int | None]] = {}
_TARGETS_MAX = 256


def target(url: str) -> tuple[str, str, int | None]:
    """``(scheme, server.address, server.port)`` of an absolute URL: the host without
    ``user:password@`` or IPv6 brackets; the scheme's default port when none is given."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return "", "", None
    end = len(rest)
    for mark in "/?#":
        index = rest.find(mark, 0, end)
        if index >= 0:
            end = index
    key = (scheme, rest[:end])
    found = _targets.get(key)
    if found is None:
        host = key[1].rpartition("@")[2]
        if host.startswith("["):
            close = host.find("]")
            address = host[1:close] if close > 0 else host[1:]
            port_text = (
                host[close + 2 :] if close > 0 and host[close + 1 : close + 2] == ":" else ""
            )
        else:
            address, _, port_text = host.partition(":")
        lowered = scheme.lower()
        port = int(port_text) if port_text.isdigit() else _DEFAULT_PORTS.get(lowered)
        found = (lowered, address, port)
        if len(_targets) < _TARGETS_MAX:
            _targets[key] = found
    return found


def error_type(error: BaseException) -> str:
    """The exception's qualified class name (``ssl.SSLError``; built-in ones without
    ``builtins.``: ``TimeoutError``)."""
    kind = type(error)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


_VERSIONS = {9: "0.9", 10: "1.0", 11: "1.1", 20: "2", 30: "3"}


def end_with_response(call: ClientCall, response: Any) -> None:
    """End ``call`` with an ``http.client``-shaped response (``status``, ``version``),
    as urllib3's and urllib's are."""
    status = getattr(response, "status", None)
    version = protocol_version(getattr(response, "version", None))
    call.end(status if type(status) is int else None, None, version)


def protocol_version(version: object) -> str | None:
    """``network.protocol.version`` from what a library reports: ``11`` (http.client's
    ``version``), ``"HTTP/1.1"``, ``b"HTTP/2"`` or a ``(major, minor)`` pair."""
    if type(version) is int:
        return _VERSIONS.get(version)
    if isinstance(version, bytes):
        version = version.decode("ascii", "replace")
    if isinstance(version, str):
        text = version.rpartition("/")[2]
        return text[:-2] if text.endswith(".0") and text != "1.0" else (text or None)
    if isinstance(version, tuple) and len(version) == 2:
        major, minor = version
        return f"{major}" if minor == 0 and major != 1 else f"{major}.{minor}"
    return None


def _suppressed(context: otel_context.Context) -> bool:
    """Whether OpenTelemetry's instrumentation suppression is set in ``context``."""
    for key, value in context.items():
        if (
            value
            and type(key) is str
            and key.startswith("suppress_")
            and (key in _SUPPRESSING_NAMES or key.startswith(_SUPPRESSING_PREFIXES))
        ):
            return True
    return False


#: (settings, whether its sampler drops every span whose parent is not sampled).
_dropping: tuple[Any, bool] = (None, False)


def _drops_unsampled(settings: Any) -> bool:
    """Whether obskit's sampler (built from ``settings``) never samples a span whose
    parent is not sampled: the parent-based samplers and ``always_off``."""
    global _dropping
    known = _dropping
    if known[0] is not settings:
        name = settings.traces_sampler
        known = _dropping = (settings, name.startswith("parentbased_") or name == "always_off")
    return known[1]


#: (settings, URL -> url.full) for the URLs called last; cleared when full.
_redacted: tuple[Any, dict[str, str]] = (None, {})
_REDACTED_MAX = 256
#: (context, propagator, headers) of the context whose W3C headers were made last: the
#: same for every call made in that context.
_injected: tuple[Any, Any, tuple[tuple[str, str], ...]] = (None, None, ())


def _context_headers(
    context: otel_context.Context, textmap: Any, cached: bool
) -> tuple[tuple[str, str], ...]:
    """The headers ``textmap`` injects for ``context``; with ``cached`` (a propagator
    whose headers depend on the context alone), those of the context seen last are kept."""
    global _injected
    injected = _injected
    if injected[0] is context and injected[1] is textmap:
        return injected[2]
    headers: dict[str, str] = {}
    textmap.inject(headers, context=context)
    found = tuple(headers.items())
    if cached:
        _injected = (context, textmap, found)
    return found


def current() -> ClientCall | None:
    """The call an outer layer has open in this context, if any."""
    opened = _open.get()
    return opened if opened is not None and not opened.ended else None


def enter_logical() -> Token[list[int] | None] | None:
    """Start a library's logical call (one API call with every request it sends: its
    redirect hops and retries are numbered ``http.request.resend_count``); None if one is
    already open (pass it to :func:`exit_logical` only when not None)."""
    if _hops.get() is not None:
        return None
    return _hops.set([0])


def exit_logical(token: Token[list[int] | None]) -> None:
    """End the logical call :func:`enter_logical` started."""
    try:  # noqa: SIM105 (contextlib.suppress costs a context manager per call)
        _hops.reset(token)
    except ValueError:  # (reset from another context: the variable is that context's)
        pass


def logical_call(name: str) -> Callable[[Any, Any, Any, Any], Any]:
    """A wrapt wrapper for library ``name``'s outermost call of a logical request
    (``Session.send``, ``Client.send``, ``OpenerDirector.open``): the requests it sends
    (redirect hops) are numbered as one call's resends."""
    from obskit._lifecycle import library_hooks

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not library_hooks.enabled(name):
            return wrapped(*args, **kwargs)
        token = enter_logical()
        if token is None:  # a redirect hop: inside the logical call of the first request
            return wrapped(*args, **kwargs)
        try:
            return wrapped(*args, **kwargs)
        finally:
            exit_logical(token)

    return wrapper


def _next_resend() -> int | None:
    """The number of requests the open logical call has sent (then one more), or None."""
    hops = _hops.get()
    if hops is None:
        return None
    count = hops[0]
    hops[0] = count + 1
    return count


def begin(
    method: str,
    url: str,
    carrier: Any,
    setter: Setter[Any] | None = None,
    resends: int | None = None,
    mark_open: bool = True,
) -> ClientCall | None:
    """Start instrumenting a request a library is about to send (its instrumentation
    checked to be on: :func:`obskit._lifecycle.library_hooks.enabled`), and inject the
    propagation headers into ``carrier`` (with ``setter``; by default ``carrier[name] =
    value``). None, having done nothing, when the call is to pass through: obskit does
    not trace, another layer's call is open, or instrumentation is suppressed.
    ``resends``: the request's ``http.request.resend_count`` (by default, what the open
    logical call counted). ``mark_open``: mark the call open in this context until
    :meth:`ClientCall.end` (inner layers then pass through).

    Never raises: an internal error is reported and the call passes through.
    """
    telemetry = _runtime._current
    if telemetry is None or telemetry.tracer is None:
        return None
    opened = _open.get()
    if opened is not None and not opened.ended:
        return None
    try:
        context = otel_context.get_current()
        if context and _suppressed(context):
            return None
        if resends is None:
            resends = _next_resend() or 0
        call = ClientCall(telemetry, method, url, context, resends)
        call.inject(carrier, setter)
        if mark_open:
            call._token = _open.set(call)
        return call
    except Exception as error:
        _internal_errors.report(COMPONENT, error)
        return None


class ClientCall:
    """One outgoing request in flight: its span (while a span is active), its timing,
    the headers it carries. Made by :func:`begin`; ended once by :meth:`end`."""

    __slots__ = (
        "_context",
        "_settings",
        "_started",
        "_token",
        "_tracer",
        "_w3c",
        "address",
        "ended",
        "method",
        "port",
        "resends",
        "retries_seen",
        "span",
        "url",
    )

    def __init__(
        self, telemetry: Any, method: str, url: str, context: otel_context.Context, resends: int
    ) -> None:
        self._settings = telemetry.settings
        self._tracer = telemetry.tracer
        self._w3c = telemetry.w3c_propagator
        self._context = context
        self._token: Token[ClientCall | None] | None = None
        #: Whether :meth:`end` ran.
        self.ended = False
        #: ``http.request.resend_count`` of the request being sent.
        self.resends = resends
        #: Retries an inner layer reported through :meth:`resent` (for its bookkeeping).
        self.retries_seen = 0
        self.method = method
        self.url = url
        self.address = ""
        self.port: int | None = None
        self.span: Any = None
        self._started = 0
        self._attempt(method, url)

    def _attempt(self, method: str, url: str) -> None:
        """Start timing (and, while a span is active, the span of) one request sent."""
        self.method = method
        self.url = url
        _, self.address, self.port = target(url)
        parent = get_current_span(self._context).get_span_context()
        flags, valid = flags_and_validity(parent)
        if valid and (flags & 1 or not _drops_unsampled(self._settings)):
            self.span = self._start_span(flags & 1)
        else:  # no active span, or one whose trace the sampler drops: nothing to record
            self.span = None
        self._started = time.perf_counter_ns()

    def _start_span(self, sampled: int) -> Any:
        method = normalize_method(self.method)
        attributes: dict[str, Any] = {"http.request.method": method}
        if method == "_OTHER":
            attributes["http.request.method_original"] = self.method
        if self.address:
            attributes["server.address"] = self.address
        if self.port is not None:
            attributes["server.port"] = self.port
        if sampled:  # (unsampled: redacted only if the sampler records the span anyway)
            attributes["url.full"] = self._full_url()
        if self.resends:
            attributes["http.request.resend_count"] = self.resends
        tracer = self._tracer
        span = spans.start_span(
            tracer,
            span_method(method),
            kind=SpanKind.CLIENT,
            context=self._context,
            attributes=attributes,
            trusted=spans.plain_fit(tracer, attributes),
        )
        if not sampled and span.is_recording():
            span.set_attribute("url.full", self._full_url())
        return span

    def _full_url(self) -> str:
        global _redacted
        settings = self._settings
        known = _redacted
        if known[0] is not settings:
            known = _redacted = (settings, {})
        full = known[1].get(self.url)
        if full is None:
            full = redact_url(self.url, settings.http_redact, settings.http_query_allowlist)
            if len(known[1]) >= _REDACTED_MAX:
                known[1].clear()
            known[1][self.url] = full
        return full

    def inject(self, carrier: Any, setter: Setter[Any] | None = None) -> None:
        """Write the propagation headers of the current request's span into ``carrier``
        (without a span: those of the caller's context, unsampled or baggage only)."""
        span = self.span
        textmap = propagation.global_textmap()
        context = self._context
        if span is None:
            if not context:
                return  # no span, no baggage: nothing to propagate
            headers = _context_headers(context, textmap, textmap is self._w3c)
        elif textmap is self._w3c:
            # W3C only: the span's headers are its parent's (cached per context) with the
            # span's own traceparent, unless the span has a trace state (then its own).
            ids, flags, valid = spans.identity(span)
            if not valid or ids[0].trace_state:
                headers = _context_headers(spans.with_span(context, span), textmap, False)
            else:
                traceparent = f"00-{ids[1]}-{ids[2]}-{flags:02x}"
                headers = tuple(
                    (name, traceparent if name == "traceparent" else value)
                    for name, value in _context_headers(context, textmap, True)
                )
        else:
            context = spans.with_span(context, span)
            if setter is None:
                textmap.inject(carrier, context=context)
            else:
                textmap.inject(carrier, context=context, setter=setter)
            return
        if setter is None:
            for name, value in headers:
                carrier[name] = value
        else:
            for name, value in headers:
                setter.set(carrier, name, value)

    def resent(
        self,
        url: str,
        carrier: Any,
        setter: Setter[Any] | None = None,
        method: str | None = None,
        status: int | None = None,
        error: BaseException | None = None,
        protocol: str | None = None,
    ) -> None:
        """The library sends the request again (a retry, or a redirect it follows within
        the call): the request so far ends with ``status`` or ``error`` (over
        ``protocol``); the next one (to ``url``, with ``method`` if it changes) gets its own
        span, with ``http.request.resend_count``, and its headers in ``carrier``."""
        if self.ended:
            return
        try:
            self._record(status, error, protocol)
            count = _next_resend()
            self.resends = self.resends + 1 if count is None else max(count, self.resends + 1)
            self._attempt(method or self.method, url)
            self.inject(carrier, setter)
        except Exception as internal:
            _internal_errors.report(COMPONENT, internal)

    def end(
        self,
        status: int | None = None,
        error: BaseException | None = None,
        protocol: str | None = None,
    ) -> None:
        """The request ended: with a response (``status``), or ``error``. Once only."""
        if self.ended:
            return
        self.ended = True
        token = self._token
        if token is not None:
            self._token = None
            try:  # noqa: SIM105 (contextlib.suppress costs a context manager per call)
                _open.reset(token)
            except ValueError:  # (ended in another context: that context's value)
                pass
        try:
            self._record(status, error, protocol)
        except Exception as internal:
            _internal_errors.report(COMPONENT, internal)

    def _record(
        self, status: int | None, error: BaseException | None, protocol: str | None
    ) -> None:
        """End the current request's span and observe its duration."""
        elapsed = (time.perf_counter_ns() - self._started) / 1e9
        span = self.span
        exemplar = None
        if span is not None:
            self.span = None
            attributes: dict[str, Any] = {}
            if status is not None:
                attributes["http.response.status_code"] = status
            if protocol:
                attributes["network.protocol.version"] = protocol
            if error is not None:
                if isinstance(error, CancelledError):  # not an error for the cancelled code
                    attributes[CANCELLED_ATTRIBUTE] = True
                else:
                    kind = error_type(error)
                    attributes["error.type"] = kind
                    span.set_status(Status(StatusCode.ERROR, kind))
            elif status is not None and status >= 400:
                attributes["error.type"] = str(status)
                span.set_status(Status(StatusCode.ERROR))
            ids, flags, valid = spans.identity(span)
            spans.finish_span(span, None, attributes)
            if flags & 1 and valid:
                exemplar = {"trace_id": ids[1], "span_id": ids[2]}
        child = client_metrics().child(
            normalize_method(self.method), self.address, "" if status is None else str(status)
        )
        observe_trusted(child, elapsed, exemplar)


def copied_headers(headers: Any, base: Any = None) -> MutableMapping[str, Any]:
    """A copy of ``headers`` (or of ``base`` when ``headers`` is None) to inject into,
    so that a mapping the caller shares between requests is never written to."""
    source = base if headers is None else headers
    if source is None:
        return {}
    copy = getattr(source, "copy", None)
    copied = copy() if callable(copy) else None
    if not isinstance(copied, MutableMapping):
        copied = dict(source)
    return copied


def set_header(headers: MutableMapping[str, Any], name: str, value: str) -> None:
    """``headers[name] = value``, replacing the header in any letter case (a plain dict
    is case-sensitive; case-insensitive mappings replace it themselves)."""
    if type(headers) is dict:
        lowered = name.lower()
        for key in [key for key in headers if key != name and key.lower() == lowered]:
            del headers[key]
    headers[name] = value


class MappingSetter(Setter[MutableMapping[str, Any]]):
    """Sets a propagation header in a mapping with :func:`set_header`."""

    def set(self, carrier: MutableMapping[str, Any], key: str, value: str) -> None:
        set_header(carrier, key, value)
