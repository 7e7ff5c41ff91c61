"""ASGI integration: ``obskit.instrument_asgi(app)`` for any ASGI 3 app.

One :class:`ObskitMiddleware` brackets each HTTP request with a
:class:`~obskit._http.server_request.ServerRequest`, the same contract as the Flask and
Django integrations: the SERVER span and its semantic-convention attributes, the incoming
W3C context (per ``trace_context_incoming``), the RED metrics with exemplars, the access
line, ``traceresponse``, redaction, excluded paths and the ``/metrics`` opt-in.

- A response ends the request when its last body message has been sent (``more_body``
  false; after the trailers when it announced them; ``http.response.pathsend``); a
  5xx ends when the app returns, so an exception raised after the error page keeps its
  stack trace on the span. Background work an app runs after the response (Starlette's
  ``BackgroundTasks``) is outside the request's duration but inside its context: its log
  lines carry the request's trace id.
- A client that goes away (``http.disconnect`` received, a ``send`` that fails) before
  the response is complete, or a request cancelled by the server, is not an error: the
  span's status stays unset and carries ``obskit.cancelled=true``; a response that had
  started keeps its status, one that had not has none (``http_response_status_code="0"``).
- A WebSocket connection gets one SERVER span of its own, ``WS {route}``, from the
  handshake to the close, continuing the caller's trace: log lines written while it is
  open carry its trace id. It is not a request: no RED metrics, no access line. Its
  messages pass through untouched. ``lifespan`` and unknown scopes pass straight through.
- A request inside one obskit already records (a mounted, separately instrumented
  sub-app) is not recorded twice.

Route templates come from ``route(scope)`` (see :func:`instrument_asgi`); Starlette and
FastAPI apps name them through :mod:`obskit.integrations.starlette`. This module imports
no framework.
"""

from __future__ import annotations

import sys
from asyncio import CancelledError
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from obskit._http.server_request import (
    ROUTE_LOOKUPS,
    EnvironHeaders,
    ServerRequest,
    current_telemetry,
    excluded,
    server_of,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
RouteOf = Callable[[Scope], "str | None"]

#: The scope key under which obskit marks a request it records (its ServerRequest), or
#: one it leaves alone on purpose (None: an excluded path): an instrumented app nested
#: inside (a mounted sub-app) does not record it again.
SCOPE_KEY = "obskit.request"
#: The keys of a request's environ (obskit's own, made per request) holding its
#: middleware and scope, so a dump of the request in flight can name its route.
MIDDLEWARE_ENVIRON_KEY = "obskit.asgi.middleware"
SCOPE_ENVIRON_KEY = "asgi.scope"
#: The scope key holding the ``root_path`` the app was called with (routing changes
#: ``root_path`` as it enters mounts; route templates are matched from the original).
ROOT_PATH_KEY = "obskit.root_path"
#: The span attribute of a request or connection ended by its client or by cancellation.
CANCELLED_ATTRIBUTE = "obskit.cancelled"
#: Scope keys set to None for every request obskit records or excludes, so that a
#: framework's own per-request telemetry steps aside (one SERVER span per request).
#: :mod:`obskit.integrations.fastapi` adds FastAPI's.
QUIET_KEYS: list[str] = []
#: Exceptions that mean the client went away, when they end a request whose client
#: disconnected (a failed ``send``), or a WebSocket connection.
#: :mod:`obskit.integrations.starlette` adds ``ClientDisconnect`` and ``WebSocketDisconnect``.
disconnect_errors: tuple[type[BaseException], ...] = (OSError,)


def add_disconnect_errors(*errors: type[BaseException]) -> None:
    """Count ``errors`` as a client that went away (see :data:`disconnect_errors`)."""
    global disconnect_errors
    disconnect_errors = (*disconnect_errors, *(e for e in errors if e not in disconnect_errors))


#: Header names (lower-case bytes, as ASGI servers give them) -> their WSGI environ key;
#: bounded, as header names are whatever clients send.
_ENVIRON_KEYS: dict[bytes, str] = {
    b"content-type": "CONTENT_TYPE",
    b"content-length": "CONTENT_LENGTH",
}
_ENVIRON_KEYS_MAX = 512


def _environ_key(name: bytes) -> str:
    key = _ENVIRON_KEYS.get(name)
    if key is None:
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        if len(_ENVIRON_KEYS) < _ENVIRON_KEYS_MAX:
            _ENVIRON_KEYS[name] = key
    return key


def environ_of(scope: Scope) -> dict[str, Any]:
    """The request's headers as a WSGI environ holds them (``HTTP_*`` keys, a header
    given twice joined with ``,`` as WSGI servers do), plus ``SERVER_NAME``/``SERVER_PORT``
    from the scope's ``server``: what :class:`ServerRequest` reads."""
    environ: dict[str, Any] = {}
    for name, value in scope.get("headers") or ():
        key = _environ_key(name.lower() if not name.islower() else name)
        text = value.decode("latin-1")
        previous = environ.get(key)
        environ[key] = text if previous is None else f"{previous},{text}"
    server = scope.get("server")
    if server:
        environ["SERVER_NAME"] = server[0]
        if server[1] is not None:
            environ["SERVER_PORT"] = server[1]
    return environ


def _report(error: Exception) -> None:
    from obskit._lifecycle import internal_errors as _internal_errors

    _internal_errors.report("asgi", error)


def _quiet(scope: Scope) -> None:
    scope[SCOPE_KEY] = scope.get(SCOPE_KEY)
    for key in QUIET_KEYS:
        scope[key] = None


class ObskitMiddleware:
    """ASGI 3 middleware: a server span, RED metrics and an access line per request.

    Args:
        app: The ASGI app to wrap.
        route: ``route(scope) -> template | None``, called once the app has answered
            (the scope as the app left it), for ``http.route``; None: the app's own
            routing names it when obskit knows the framework (Starlette, FastAPI), else
            every request is ``<unmatched>`` (obskit never uses the raw path).
    """

    def __init__(self, app: ASGIApp, route: RouteOf | None = None) -> None:
        self.app = app
        self.route = route
        _load_framework_support()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "websocket":
                await self._websocket(scope, receive, send)
            else:  # lifespan, and anything a server adds later
                await self.app(scope, receive, send)
            return
        telemetry = current_telemetry()
        if telemetry is None or SCOPE_KEY in scope:  # off, or recorded further out
            await self.app(scope, receive, send)
            return
        settings = telemetry.settings
        path = scope.get("path") or "/"
        if settings.http_serve_metrics and path == settings.http_metrics_path:
            from obskit import metrics_asgi_app

            _quiet(scope)
            await metrics_asgi_app()(scope, receive, send)
            return
        if settings.http_excluded_paths and excluded(path, settings.http_excluded_paths):
            _quiet(scope)
            await self.app(scope, receive, send)
            return
        try:
            environ = environ_of(scope)
            environ[MIDDLEWARE_ENVIRON_KEY] = self
            environ[SCOPE_ENVIRON_KEY] = scope
            address, port = server_of(environ)
            client = scope.get("client")
            query = scope.get("query_string")
            state = ServerRequest(  # by position: see ServerRequest
                telemetry,
                scope.get("method") or "GET",
                path,
                environ,
                scope.get("scheme") or "http",  # scheme
                query.decode("latin-1") if query else "",  # query
                address,  # server_address
                port,  # server_port
                client[0] if client else None,  # client_address
                scope.get("http_version"),  # protocol
            )
        except Exception as error:
            _report(error)
            await self.app(scope, receive, send)
            return
        try:
            await _Exchange(self, state, scope).run(receive, send)
        finally:  # (the scope holds the request, which holds the environ: no cycle left)
            del environ[MIDDLEWARE_ENVIRON_KEY], environ[SCOPE_ENVIRON_KEY]

    def route_of(self, scope: Scope) -> str | None:
        """The route template of a request the app has answered (None: unmatched)."""
        try:
            route = self.route
            if route is None:
                return _framework_route(self.app, scope)
            return route(scope)
        except Exception as error:
            _report(error)
            return None

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        telemetry = current_telemetry()
        if telemetry is None or SCOPE_KEY in scope:
            await self.app(scope, receive, send)
            return
        path = scope.get("path") or "/"
        settings = telemetry.settings
        if settings.http_excluded_paths and excluded(path, settings.http_excluded_paths):
            _quiet(scope)
            await self.app(scope, receive, send)
            return
        try:
            connection = _Connection(telemetry, scope, path)
        except Exception as internal:
            _report(internal)
            await self.app(scope, receive, send)
            return
        scope[SCOPE_KEY] = connection
        scope[ROOT_PATH_KEY] = scope.get("root_path", "")
        for key in QUIET_KEYS:
            scope[key] = None
        error: BaseException | None = None
        try:
            await self.app(scope, receive, send)
        except BaseException as raised:
            error = raised
            raise
        finally:
            connection.finish(self.route_of(scope), error)


class _Exchange:
    """One HTTP request between the server and the app: watches the messages, ends the
    request once, with its route."""

    __slots__ = ("_middleware", "_scope", "_state", "disconnected", "finished", "started")

    def __init__(self, middleware: ObskitMiddleware, state: ServerRequest, scope: Scope) -> None:
        self._middleware = middleware
        self._state = state
        self._scope = scope
        self.started = False
        self.finished = False
        self.disconnected = False

    async def run(self, receive: Receive, send: Send) -> None:
        state = self._state
        scope = self._scope
        scope[SCOPE_KEY] = state
        scope[ROOT_PATH_KEY] = scope.get("root_path", "")
        for key in QUIET_KEYS:
            scope[key] = None
        token = state.attach()
        try:
            await self._middleware.app(scope, self._receive(receive), self._send(send))
        except BaseException as error:
            if not self.finished:
                if self._cancelled(error):
                    self._cancel()
                else:
                    self._name()
                    state.finish(error)
                self.finished = True
            raise
        else:
            if not self.finished:
                self.finished = True
                if self.disconnected:
                    self._cancel()
                else:  # an incomplete response, or a 5xx (see _send)
                    self._name()
                    state.finish()
        finally:
            state.detach(token)

    def _cancelled(self, error: BaseException) -> bool:
        if isinstance(error, CancelledError):
            return True
        return self.disconnected and isinstance(error, disconnect_errors)

    def _cancel(self) -> None:
        """The client went away (or the server cancelled the request): not an error."""
        state = self._state
        try:
            self._name()
            if not self.started:
                state.status = None
            state.span.set_attribute(CANCELLED_ATTRIBUTE, True)
        except Exception as error:
            _report(error)
        state.finish()

    def _name(self) -> None:
        state = self._state
        if state.route is None:
            state.route = self._middleware.route_of(self._scope)

    def _receive(self, receive: Receive) -> Receive:
        async def observed_receive() -> Message:
            message = await receive()
            if message.get("type") == "http.disconnect":
                self.disconnected = True
            return message

        return observed_receive

    def _send(self, send: Send) -> Send:
        state = self._state
        trailers = False

        async def observed_send(message: Message) -> None:
            nonlocal trailers
            kind = message.get("type")
            if kind == "http.response.start" and not self.started:
                self.started = True
                try:
                    message = self._started(message)
                    trailers = bool(message.get("trailers"))
                except Exception as error:
                    _report(error)
            try:
                await send(message)
            except BaseException:
                self.disconnected = True  # the server could not deliver it
                raise
            if self.finished:
                return
            if (
                (kind == "http.response.body" and not message.get("more_body") and not trailers)
                or (kind == "http.response.trailers" and not message.get("more_trailers"))
                or kind == "http.response.pathsend"
            ):
                status = state.status
                if status is not None and status >= 500:
                    return  # ends when the app returns, with the exception if one follows
                self.finished = True
                state.finish()

        return observed_send

    def _started(self, message: Message) -> Message:
        """Record the status (and the route, known now); add ``traceresponse``."""
        state = self._state
        self._name()
        headers = message.get("headers") or ()
        captured = None
        if state.captures_response_headers:
            captured = {
                name.decode("latin-1").lower(): value.decode("latin-1") for name, value in headers
            }
        extra = state.response_headers(int(message["status"]), captured)
        if extra:  # a new message: the app's header list may belong to a reused response
            message = {
                **message,
                "headers": [
                    *headers,
                    *[(name.encode("latin-1"), value.encode("latin-1")) for name, value in extra],
                ],
            }
        return message


class _Connection:
    """A WebSocket connection's span (no metrics, no access line)."""

    __slots__ = ("_token", "span")

    def __init__(self, telemetry: Any, scope: Scope, path: str) -> None:
        from opentelemetry import context as otel_context
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind

        from obskit._http.redaction import redact_path, redact_query
        from obskit._logs import pipeline as _pipeline
        from obskit._traces import incoming_context

        settings = telemetry.settings
        environ = environ_of(scope)
        address, port = server_of(environ)
        if ";" in path:
            path = redact_path(path, settings.http_redact, settings.http_query_allowlist)
        attributes: dict[str, Any] = {
            "url.scheme": scope.get("scheme") or "ws",
            "url.path": path,
            "network.protocol.name": "websocket",
        }
        if address:
            attributes["server.address"] = address
        if port:
            attributes["server.port"] = port
        query = scope.get("query_string")
        if query:
            attributes["url.query"] = redact_query(
                query.decode("latin-1"), settings.http_redact, settings.http_query_allowlist
            )
        agent = environ.get("HTTP_USER_AGENT")
        if agent:
            attributes["user_agent.original"] = agent
        client = scope.get("client")
        if settings.capture_pii and client:
            attributes["client.address"] = client[0]
        parent, link = incoming_context.extract(EnvironHeaders(environ), settings)
        _pipeline.request_started()
        self.span = telemetry.tracer.start_span(
            "WS",
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            links=(link,) if link is not None else None,
        )
        self._token = otel_context.attach(trace.set_span_in_context(self.span, parent))

    def finish(self, route: str | None, error: BaseException | None) -> None:
        """End the span: named by the route, an error unless the client closed it."""
        from opentelemetry import context as otel_context
        from opentelemetry.trace import Status, StatusCode

        span = self.span
        try:
            if route:
                span.update_name(f"WS {route}")
                span.set_attribute("http.route", route)
            if error is None or isinstance(error, disconnect_errors):
                pass  # closed, by either side: not an error
            elif isinstance(error, CancelledError):
                span.set_attribute(CANCELLED_ATTRIBUTE, True)
            else:
                span.record_exception(error, escaped=True)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        except Exception as internal:
            _report(internal)
        finally:
            span.end()
            otel_context.detach(self._token)


# --- framework support, loaded only when the framework is ----------------------------


def _route_in_flight(environ: Any) -> str | None:
    """The route of a request still running (a dump or a profile sample of it, from
    another thread), from its environ: the framework's routing only (a ``route=``
    callback is called once the app has answered, as documented), errors unreported."""
    middleware = environ.get(MIDDLEWARE_ENVIRON_KEY)
    scope = environ.get(SCOPE_ENVIRON_KEY)
    if middleware is None or scope is None:
        return None
    route = middleware.route
    try:
        if route is None:
            return _framework_route(middleware.app, scope)
        if getattr(route, "in_flight_safe", False):  # obskit's own (Starlette's routes)
            return route(scope)  # type: ignore[no-any-return]
    except Exception:  # a request torn down meanwhile
        return None
    return None


ROUTE_LOOKUPS.append(_route_in_flight)


def _load_framework_support() -> None:
    """Import obskit's support for the frameworks the process has imported (it registers
    itself: route naming, quiet scope keys); never a framework obskit would import."""
    if "starlette" in sys.modules:
        import obskit.integrations.starlette
    if "fastapi" in sys.modules:
        import obskit.integrations.fastapi  # noqa: F401


#: Set by :mod:`obskit.integrations.starlette`: the route of a request answered by
#: ``app`` (or by the app in the scope), None when obskit does not know its framework.
framework_route: Callable[[Any, Scope], str | None] | None = None


def _framework_route(app: Any, scope: Scope) -> str | None:
    found = framework_route
    return found(app, scope) if found is not None else None


def instrument_asgi(app: Any, *, route: RouteOf | None = None) -> Any:
    """Give every request of an ASGI 3 app a server span, RED metrics and an access line.

    A Starlette or FastAPI app is instrumented in place and returned: keep serving it
    (``uvicorn main:app``); its routes name spans and metrics (``GET /items/{item_id}``).
    Any other ASGI app is returned wrapped in :class:`ObskitMiddleware`: serve what this
    returns (``app = obskit.instrument_asgi(app)``). Safe to call again on the same app.
    Requests served before ``obskit.init()`` pass through untouched.

    Args:
        app: The ASGI 3 application.
        route: ``route(scope) -> template | None`` naming a request's route once the app
            has answered; by default the framework's routing (Starlette, FastAPI), else
            ``<unmatched>``.
    """
    _load_framework_support()
    from obskit.integrations.uvicorn import check_workers, install_access_filter

    check_workers()
    install_access_filter()
    if isinstance(app, ObskitMiddleware):
        return app
    if "starlette" in sys.modules:
        from obskit.integrations import starlette as _starlette

        if _starlette.is_app(app):
            return _starlette.instrument(app, route)
    return ObskitMiddleware(app, route)
