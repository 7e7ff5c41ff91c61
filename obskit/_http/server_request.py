"""Framework-neutral HTTP server instrumentation: one :class:`ServerRequest` per request.

The Flask and Django integrations translate their request objects into calls on a
``ServerRequest``; everything the contract fixes lives here once: the server span
and its semantic-convention attributes, W3C context extraction, the RED metrics,
the access log line, redaction, the ``traceresponse`` header.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, Status, StatusCode

from obskit._dumps.active_spans import enter_request as _enter_request
from obskit._dumps.active_spans import leave as _leave
from obskit._fast import propagation, spans
from obskit._http import access_line as _access_line
from obskit._http.methods import normalize_method, span_method
from obskit._http.redaction import redact_header, redact_path, redact_query
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import runtime as _runtime
from obskit._logs import pipeline as _pipeline
from obskit._metrics.registry import (
    ObskitGauge,
    ObskitHistogram,
    add_trusted,
    label_values,
    observe_trusted,
    store,
)
from obskit._traces import incoming_context as _incoming_context

UNMATCHED = "<unmatched>"


class HttpMetrics:
    """The RED metrics of HTTP servers, defined once in obskit's registry."""

    def __init__(self) -> None:
        metrics = store()
        self.duration: ObskitHistogram = metrics.define(
            "histogram",
            ObskitHistogram,
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests.",
            ("http_request_method", "http_route", "http_response_status_code"),
            None,
            buckets=metrics.buckets,
        )
        self.active: ObskitGauge = metrics.define(
            "gauge",
            ObskitGauge,
            "http_server_active_requests",
            "HTTP server requests in flight.",
            ("http_request_method",),
            None,
            multiprocess_mode="livesum",
        )
        #: Children already looked up, by label values: a request reuses its series
        #: without prometheus-client's per-call label validation. Only real series
        #: are kept (the overflow series is looked up each time, so it stays counted).
        self._durations: dict[tuple[str, str, str], Any] = {}
        self._actives: dict[str, Any] = {}

    def duration_child(self, method: str, route: str, status: str) -> Any:
        """The duration histogram's child for these label values."""
        key = (method, route, status)
        child = self._durations.get(key)
        if child is None:
            child = self.duration.labels(method, route, status)
            if label_values(child) == key:
                self._durations[key] = child
        return child

    def active_child(self, method: str) -> Any:
        """The active-requests gauge's child for ``method``."""
        child = self._actives.get(method)
        if child is None:
            child = self.active.labels(method)
            if label_values(child) == (method,):
                self._actives[method] = child
        return child


_cached: tuple[Any, HttpMetrics] | None = None


def http_metrics() -> HttpMetrics:
    """The HTTP metrics of the current metric store (defined on first use)."""
    global _cached
    cached = _cached
    metrics = store()
    if cached is None or cached[0] is not metrics:
        cached = _cached = (metrics, HttpMetrics())
    return cached[1]


def excluded(path: str, patterns: Iterable[str]) -> bool:
    """Whether ``path`` matches an excluded path (exact, or ``/prefix/*``)."""
    for pattern in patterns:
        if pattern.endswith("/*"):
            if path == pattern[:-2] or path.startswith(pattern[:-1]):
                return True
        elif path == pattern:
            return True
    return False


#: (url.scheme, server.address, server.port, network.protocol.version) -> the span
#: attributes of a request to that server (the empty ones left out; method and path to
#: fill in) and the longest text among them (None if one is neither ``str`` nor ``int``),
#: for the few distinct values a server sees; bounded.
_server_attributes: dict[tuple[Any, Any, Any, Any], tuple[dict[str, Any], int | None]] = {}
#: (HTTP_HOST, SERVER_NAME, SERVER_PORT) -> (server.address, server.port); bounded, as
#: Host is whatever the client sent.
_servers: dict[tuple[Any, Any, Any], tuple[str | None, int | None]] = {}
_SERVERS_MAX = 64


def server_attributes(
    scheme: str, address: str | None, port: int | None, protocol: str | None
) -> tuple[dict[str, Any], int | None]:
    """A request's span attributes with those from its server filled in (a shared dict:
    copy it, then set ``http.request.method`` and ``url.path``), and the longest text
    among the server's (None if one is not a plain ``str`` or ``int``): looked up, not
    rebuilt and re-checked per request."""
    key = (scheme, address, port, protocol)
    found = _server_attributes.get(key)
    if found is None:
        server: dict[str, Any] = {"url.scheme": scheme}
        if address:
            server["server.address"] = address
        if port:
            server["server.port"] = port
        if protocol:
            server["network.protocol.version"] = protocol
        longest = (
            max((len(value) for value in server.values() if type(value) is str), default=0)
            if spans.plain_values(server, None)  # str and int values only (any length)
            else None
        )
        # The method and path first (as in OpenTelemetry's instrumentations), set per request.
        found = ({"http.request.method": "", "url.path": "", **server}, longest)
        if len(_server_attributes) < _SERVERS_MAX:
            _server_attributes[key] = found
    return found


def server_of(meta: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """(``server.address``, ``server.port``) of a WSGI environ or Django's ``request.META``."""
    key = (meta.get("HTTP_HOST"), meta.get("SERVER_NAME"), meta.get("SERVER_PORT"))
    found = _servers.get(key)
    if found is None:
        found = (server_address(meta), server_port(meta))
        if len(_servers) < _SERVERS_MAX:
            _servers[key] = found
    return found


#: The empty context: the parent of a request that continues no trace (never mutated:
#: a Context refuses item assignment, and with_span copies before it adds the span).
_NOTHING = otel_context.Context()

#: How integrations find the route of a request still running, from its environ (None:
#: unknown): their ``instrument_*`` adds one; dumps ask :meth:`ServerRequest.route_now`.
ROUTE_LOOKUPS: list[Callable[[Mapping[str, Any]], str | None]] = []


class ServerRequest:
    """One HTTP request in flight: its span, context, timing and metrics.

    ``environ``: the request's CGI-style variables, a WSGI environ or Django's
    ``request.META`` (headers as ``HTTP_*`` keys; see :class:`EnvironHeaders`).
    Integrations pass the arguments by position: a class call with keywords costs
    a dictionary per request.
    """

    __slots__ = (
        "_active",
        "_client_address",
        "_entry",
        "_environ",
        "_errored",
        "_finished",
        "_flags",
        "_ids",
        "_metrics",
        "_settings",
        "_started",
        "captures_response_headers",
        "context",
        "method",
        "path",
        "route",
        "span",
        "status",
        "streamed",
    )

    def __init__(
        self,
        telemetry: Any,
        method: str,
        path: str,
        environ: Mapping[str, Any],
        scheme: str = "http",
        query: str = "",
        server_address: str | None = None,
        server_port: int | None = None,
        client_address: str | None = None,
        protocol: str | None = None,
    ) -> None:
        settings = telemetry.settings
        self._settings = settings
        self._metrics = metrics = http_metrics()
        self.method = normalized = normalize_method(method)
        if ";" in path:  # path parameters (/cart;jsessionid=...): redacted as a query's
            path = redact_path(path, settings.http_redact, settings.http_query_allowlist)
        self.path = path
        self.route: str | None = None
        self.status: int | None = None
        #: Set by the integration when the response body is produced lazily.
        self.streamed = False
        self._started = time.perf_counter_ns()
        self._environ = environ  # (for route_now(): a dump of the request in flight)
        self._finished = False
        self._errored = False
        self._client_address = client_address if settings.capture_pii else None
        #: Whether any response header is to be recorded (else skip collecting them).
        self.captures_response_headers = bool(settings.http_capture_response_headers)
        _pipeline.request_started()  # bound fields never leak from the previous request
        server, server_longest = server_attributes(scheme, server_address, server_port, protocol)
        attributes = server.copy()  # a copy of a dict of the same keys: cheaper than a new one
        attributes["http.request.method"] = normalized
        attributes["url.path"] = path
        agent = environ.get("HTTP_USER_AGENT")
        if agent:
            attributes["user_agent.original"] = agent
        tracer = telemetry.tracer
        uncommon = (
            normalized == "_OTHER"
            or query
            or self._client_address
            or settings.http_capture_request_headers
        )
        captured = uncommon and self._add_uncommon(attributes, method, query, environ)
        limits = spans.attribute_limits(tracer)  # None: the SDK validates them per call
        if limits is None:
            fits = False
        elif uncommon:
            fits = not captured and spans.plain_fit(tracer, attributes)
        else:  # plain_fit's checks, for the values that are not the server's (checked once)
            count, longest = limits
            fits = (
                server_longest is not None
                and type(path) is str
                and (not agent or type(agent) is str)
                and (count is None or len(attributes) <= count)
                and (
                    longest is None
                    or (
                        server_longest <= longest
                        and len(path) <= longest
                        and (not agent or len(agent) <= longest)
                    )
                )
            )
        if (
            environ.get("HTTP_TRACEPARENT") is None
            and environ.get("HTTP_BAGGAGE") is None
            and telemetry.w3c_propagator is propagation.global_textmap()
        ):
            parent, link = _NOTHING, None  # what extract() returns: nothing to continue
        else:  # per trace_context_incoming: see obskit._traces.incoming_context (never raises)
            parent, link = _incoming_context.extract(EnvironHeaders(environ), settings)
        if link is None:
            span = spans.start_span(
                tracer,
                span_method(normalized),
                kind=SpanKind.SERVER,
                context=parent,
                attributes=attributes,
                trusted=fits,
            )
        else:  # a restarted trace, linked to the caller's (the SDK's call takes links)
            span = tracer.start_span(
                span_method(normalized),
                context=parent,
                kind=SpanKind.SERVER,
                attributes=attributes,
                links=(link,),
            )
        self.span = span
        self.context = spans.with_span(parent, span)
        #: The span's ids (fixed for its life): hex text for traceresponse, exemplar, log;
        #: its trace flags, and whether it is valid.
        self._ids, flags, valid = spans.identity(span)
        self._flags = (flags, valid)
        self._active = metrics.active_child(normalized)
        add_trusted(self._active, 1)
        #: Its key in the registry of running spans (dumps, the stuck-span watchdog).
        self._entry = _enter_request(span, self, self._started * 1e-9)

    def _add_uncommon(
        self, attributes: dict[str, Any], method: str, query: str, environ: Mapping[str, Any]
    ) -> bool:
        """Add the attributes most requests lack; whether request headers were captured."""
        if self.method == "_OTHER":
            attributes["http.request.method_original"] = method
        if query:
            settings = self._settings
            attributes["url.query"] = redact_query(
                query, settings.http_redact, settings.http_query_allowlist
            )
        if self._client_address:
            attributes["client.address"] = self._client_address
        names = self._settings.http_capture_request_headers
        if not names:
            return False
        captured = False
        headers = EnvironHeaders(environ)
        for name in names:
            if name in headers:
                captured = True
                attributes[f"http.request.header.{name}"] = [
                    self._header_value(name, headers[name])
                ]
        return captured

    def _header_value(self, name: str, value: str) -> str:
        settings = self._settings
        return redact_header(name, value, settings.http_redact, settings.http_query_allowlist)

    def attach(self) -> object:
        """Make the request's span current (returns the token for :meth:`detach`)."""
        return spans.attach(self.context)

    @staticmethod
    def detach(token: object) -> None:
        """Undo :meth:`attach`."""
        spans.detach(token)

    def response_headers(
        self, status: int, headers: Mapping[str, str] | None = None
    ) -> list[tuple[str, str]]:
        """Record the status (and captured response headers); return headers to add."""
        self.status = status
        if headers:
            for name in self._settings.http_capture_response_headers:
                if name in headers:
                    self.span.set_attribute(
                        f"http.response.header.{name}", [self._header_value(name, headers[name])]
                    )
        if not self._settings.http_traceresponse:
            return []
        _, trace_id, span_id = self._ids
        flags = "01" if self._flags[0] & 1 else "00"  # 1: TraceFlags.SAMPLED
        return [("traceresponse", f"00-{trace_id}-{span_id}-{flags}")]

    def record_exception(self, error: BaseException) -> None:
        """An exception escaped the view (the framework may still answer 500)."""
        self.span.record_exception(error, escaped=True)
        self.span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        self._errored = True

    def finish(self, error: BaseException | None = None) -> None:
        """End the request: span name/attributes/status, metrics, access log. Once only.

        Call it with the request's context attached (the access line is written in it).
        """
        if self._finished:
            return
        self._finished = True
        span = self.span
        ended = False
        try:
            elapsed_ns = time.perf_counter_ns() - self._started
            elapsed = elapsed_ns / 1e9
            status = self.status if self.status is not None else (500 if error else None)
            if error is not None:
                self.record_exception(error)
            elif status is not None and status >= 500 and not self._errored:
                span.set_status(Status(StatusCode.ERROR))  # (keeps a recorded error's text)
            name = f"{span_method(self.method)} {self.route}" if self.route else None
            attributes: dict[str, Any] = {}
            if self.route:
                attributes["http.route"] = self.route
            if status is not None:
                attributes["http.response.status_code"] = status
            # The span ends here, before the metrics and the access line (which carry
            # its ids, not the live span); its duration is the request's, as measured.
            spans.finish_span(span, name, attributes)
            ended = True
            flags, valid = self._flags
            ids = self._ids
            # metrics.exemplar_from(ids), inlined: sampled and valid.
            exemplar = {"trace_id": ids[1], "span_id": ids[2]} if flags & 1 and valid else None
            route = self.route or UNMATCHED
            child = self._metrics.duration_child(
                self.method, route, str(status) if status is not None else "0"
            )
            observe_trusted(child, elapsed, exemplar)
            if self._settings.http_access_log:
                _access_line.write(
                    self.method,
                    route,
                    self.path,
                    status,
                    (elapsed_ns + 500) // 1000,  # whole microseconds
                    self._client_address,
                    None,  # the span's context: given by its ids
                    ids if valid else (),
                )
        except Exception as internal:
            _internal_errors.report("http", internal)
        finally:
            add_trusted(self._active, -1)
            _leave(self._entry, None)
            # Not ended, unless it ended before something raised (a span processor's
            # on_end): end_time is the SDK span's; other spans have none, end_span decides.
            if not ended and getattr(span, "end_time", None) is None:
                spans.end_span(span)

    def route_now(self) -> str | None:
        """The route template, also while the request is still running (a dump of it):
        asked of the integrations' :data:`ROUTE_LOOKUPS` until one knows it."""
        route = self.route
        if route is None:
            for lookup in ROUTE_LOOKUPS:
                try:
                    route = lookup(self._environ)
                except Exception:  # a request torn down meanwhile: no route
                    route = None
                if route is not None:
                    break
        return route

    def abandon(self, error_type: str, description: str) -> None:
        """End the request's span now as an error (``error.type``), from any thread,
        without metrics or an access line: the process is about to stop serving it
        (gunicorn aborting a timed-out worker). :meth:`finish` does nothing afterwards."""
        if self._finished:
            return
        self._finished = True
        span = self.span
        try:
            span.set_status(Status(StatusCode.ERROR, description))
            attributes: dict[str, Any] = {"error.type": error_type}
            route = self.route = self.route_now()
            if route:
                attributes["http.route"] = route
            spans.finish_span(
                span, f"{span_method(self.method)} {route}" if route else None, attributes
            )
        except Exception as internal:
            _internal_errors.report("http", internal)
        finally:
            add_trusted(self._active, -1)
            _leave(self._entry, None)


#: The environ keys of the headers every request looks up.
_NAMES = {
    "user-agent": "HTTP_USER_AGENT",
    "traceparent": "HTTP_TRACEPARENT",
    "tracestate": "HTTP_TRACESTATE",
    "baggage": "HTTP_BAGGAGE",
}
#: Headers a WSGI environ holds without the ``HTTP_`` prefix.
_UNPREFIXED = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}
_UNPREFIXED_KEYS = frozenset(_UNPREFIXED.values())


class EnvironHeaders(Mapping[str, str]):
    """The request headers of a WSGI environ (or Django's ``request.META``) by
    lower-case name, read in place: ``user-agent`` is ``HTTP_USER_AGENT``,
    ``content-type``/``content-length`` are ``CONTENT_TYPE``/``CONTENT_LENGTH``
    (absent when empty)."""

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    @staticmethod
    def _key(name: object) -> str | None:
        if not isinstance(name, str) or "_" in name or name.lower() != name:
            return None  # names are lower-case; "x_a" is not one the environ can hold
        return _UNPREFIXED.get(name) or "HTTP_" + name.upper().replace("-", "_")

    def get(self, name: str, default: Any = None) -> Any:
        key = _NAMES.get(name) if type(name) is str else None
        if key is not None:  # a header every request looks up: an HTTP_ key
            value = self._environ.get(key)
            return default if value is None else value
        key = self._key(name)
        if key is None:
            return default
        value = self._environ.get(key)
        return default if value is None or (not value and key in _UNPREFIXED_KEYS) else value

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value  # type: ignore[no-any-return]

    def __contains__(self, name: object) -> bool:
        return self.get(name) is not None  # type: ignore[arg-type]

    def _names(self) -> list[str]:
        names = [
            key[5:].replace("_", "-").lower() for key in self._environ if key.startswith("HTTP_")
        ]
        names += [name for name, key in _UNPREFIXED.items() if self._environ.get(key)]
        return names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


def current_telemetry() -> Any:
    """The installed runtime if it traces (None before init, after shutdown, or disabled)."""
    telemetry = _runtime._current
    if telemetry is None or telemetry.tracer is None:
        return None
    return telemetry


def server_address(meta: Mapping[str, Any]) -> str | None:
    """``server.address`` from a WSGI environ (or Django's ``request.META``)."""
    host = str(meta.get("HTTP_HOST") or meta.get("SERVER_NAME") or "")
    if not host:
        return None
    return host if host.endswith("]") else host.rsplit(":", 1)[0]


def server_port(meta: Mapping[str, Any]) -> int | None:
    """``server.port`` from a WSGI environ (or Django's ``request.META``)."""
    host = str(meta.get("HTTP_HOST", ""))
    candidate = host.rsplit(":", 1)[1] if ":" in host and not host.endswith("]") else None
    candidate = candidate or meta.get("SERVER_PORT")
    try:
        return int(candidate) if candidate else None
    except ValueError:
        return None
