"""Flask integration: ``obskit.instrument_flask(app)``.

Only Flask's and Werkzeug's public API, so one module serves every Flask from 2.3 on
(3.2 merged the application and request contexts; nothing here depends on them):

- ``app.wsgi_app`` is wrapped by a WSGI middleware (Flask's documented middleware
  hook) that owns each request: its span, timing, metrics, access line and the
  ``traceresponse`` header (added in ``start_response``, with the status sent);
- an ``after_request`` function notes the route template (``request.url_rule``,
  read while Flask's request is current) and whether the response streams
  (``response.is_streamed``);
- the ``got_request_exception`` receiver notes the route too, and the exception;
- a filter on the ``werkzeug`` logger (Flask's development server) drops its own
  per-request line, which obskit's access line replaces, and its colour codes.

A response built in memory ends the request when the app returns it; a streamed one
(``stream_with_context`` or any generator body) ends after its last chunk, or at
``close()`` when the client goes away, with the request's context current while each
chunk is produced. Flask's behaviour and responses are unchanged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from flask import Flask, Response, got_request_exception, has_request_context, request

from obskit._http.server_request import (
    ROUTE_LOOKUPS,
    ServerRequest,
    current_telemetry,
    excluded,
    server_of,
)

StartResponse = Callable[..., Any]

#: The request the middleware is serving, and its environ, for the ``after_request``
#: function and the ``got_request_exception`` receiver (which Flask calls with neither).
#: A context variable: right under threads and greenlets, and cheaper than looking them
#: up through the ``flask.request`` proxy.
_current: ContextVar[tuple[ServerRequest, dict[str, Any]] | None] = ContextVar(
    "obskit.flask.request", default=None
)
_ABSENT = object()
#: The environ key under which the ``got_request_exception`` receiver leaves the exception
#: it recorded: if Flask then re-raises it (``PROPAGATE_EXCEPTIONS``), it is not recorded twice.
_RECORDED = "obskit.flask.exception"


def instrument_flask(app: Flask) -> Flask:
    """Give every request of ``app`` a server span, RED metrics and an access log line.

    Also serves obskit's metrics at ``http_metrics_path`` (default ``/metrics``).
    Safe to call again on the same app (no double instrumentation) and on each new
    app an app factory builds. Requests made before ``obskit.init()`` pass through
    untouched. Returns ``app``.
    """
    if app.extensions.get("obskit"):
        return app
    app.extensions["obskit"] = True
    app.wsgi_app = _Middleware(app.wsgi_app)  # type: ignore[method-assign]
    app.after_request(_note_response)
    got_request_exception.connect(_note_exception, app, weak=False)
    if _route not in ROUTE_LOOKUPS:  # the route of a request in flight, for dumps
        ROUTE_LOOKUPS.append(_route)
    _install_dev_server_filter()
    return app


def _note_response(response: Response) -> Response:
    """``after_request``: the route template, and whether the response streams (then
    the request ends with its last chunk). The response is returned as it came. Flask
    runs it again on the error handler's response if a later hook raises."""
    current = _current.get()
    if current is not None:
        state, environ = current
        try:
            state.route = _route(environ)
            state.streamed = response.is_streamed
        except Exception as error:
            _report(error)
    return response


def _note_exception(sender: Flask, exception: BaseException, **extra: Any) -> None:
    """``got_request_exception``: Flask answers 500; the span keeps the exception (and
    the route: an ``after_request`` function that raised may have run before ours)."""
    current = _current.get()
    if current is not None:
        state, environ = current
        try:
            state.route = _route(environ)
            state.record_exception(exception)
            environ[_RECORDED] = exception
        except Exception as error:
            _report(error)


def _route(environ: Mapping[str, Any]) -> str | None:
    """The template of the URL rule Flask matched for the current request (None: none).

    Werkzeug's ``Request`` puts itself at ``environ["werkzeug.request"]`` (its documented
    ``populate_request``) while Flask's request is current: one lookup, where the
    ``flask.request`` proxy costs ~0.6 us; the proxy answers if that is not Flask's."""
    rule: Any = getattr(environ.get("werkzeug.request"), "url_rule", _ABSENT)
    if rule is _ABSENT:
        rule = request.url_rule if has_request_context() else None
    return rule.rule if rule is not None else None


def _report(error: Exception) -> None:
    from obskit._lifecycle import internal_errors as _internal_errors

    _internal_errors.report("flask", error)


class _Middleware:
    """The WSGI middleware that brackets each request with a ServerRequest."""

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        telemetry = current_telemetry()
        if telemetry is None:
            return self._untraced(environ, start_response)
        settings = telemetry.settings
        path = environ.get("PATH_INFO", "") or "/"
        if settings.http_serve_metrics and path == settings.http_metrics_path:
            from obskit import metrics_wsgi_app

            served: Iterable[bytes] = metrics_wsgi_app()(environ, start_response)
            return served
        if settings.http_excluded_paths and excluded(path, settings.http_excluded_paths):
            return self._untraced(environ, start_response)
        try:
            address, port = server_of(environ)
            state = ServerRequest(  # by position: see ServerRequest
                telemetry,
                environ.get("REQUEST_METHOD", "GET"),
                path,
                environ,
                environ.get("wsgi.url_scheme", "http"),  # scheme
                environ.get("QUERY_STRING", ""),  # query
                address,  # server_address
                port,  # server_port
                environ.get("REMOTE_ADDR"),  # client_address
                environ.get("SERVER_PROTOCOL", "").removeprefix("HTTP/") or None,  # protocol
            )
        except Exception as error:
            _report(error)
            return self._untraced(environ, start_response)

        def observing_start_response(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            try:
                code = int(status[:3])  # PEP 3333: three digits, a space, the reason
                captured = (
                    {k.lower(): v for k, v in headers}
                    if state.captures_response_headers
                    else None  # nothing to capture: don't build the mapping
                )
                extra = state.response_headers(code, captured)
                if extra:
                    headers = [*headers, *extra]  # a new list: the caller's may be reused
            except Exception as error:
                _report(error)
            return start_response(status, headers, *exc)

        token = state.attach()
        outer = _current.set((state, environ))
        try:
            body = self.wsgi_app(environ, observing_start_response)
            if not state.streamed:
                state.finish()  # the body is already in memory
                return body
        except BaseException as error:
            if environ.get(_RECORDED) is error:  # Flask re-raised what it signalled
                state.status = state.status or 500
                state.finish()
            else:
                state.finish(error)
            raise
        finally:
            _current.reset(outer)
            state.detach(token)
        return _StreamedBody(body, state)

    def _untraced(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Serve a request obskit does not record; inside another request (a view calling
        the app again), hide that request from this one's hooks."""
        if _current.get() is None:
            return self.wsgi_app(environ, start_response)
        outer = _current.set(None)
        try:
            return self.wsgi_app(environ, start_response)
        finally:
            _current.reset(outer)


class _StreamedBody:
    """A streamed response: the request's context is current while each chunk is
    produced; the request ends after the last chunk, or at ``close()`` if earlier."""

    def __init__(self, body: Iterable[bytes], state: ServerRequest) -> None:
        self._body = body
        self._iterator: Iterator[bytes] | None = None
        self._state = state

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._iterator is None:
            self._iterator = iter(self._body)
        token = self._state.attach()
        try:
            return next(self._iterator)
        except StopIteration:
            self._state.finish()
            raise
        except BaseException as error:
            self._state.record_exception(error)
            raise
        finally:
            self._state.detach(token)

    def close(self) -> None:
        token = self._state.attach()
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._state.finish()
            self._state.detach(token)


#: An ANSI escape sequence (Werkzeug colours its dev server's lines).
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class DevServerLines(logging.Filter):
    """On the ``werkzeug`` logger (Flask's development server): drops its per-request
    line while obskit writes its own access line for the request, and takes the colour
    codes out of the rest, so the JSON log carries plain text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.endswith('] "%s" %s %s'):
            telemetry = current_telemetry()
            if telemetry is not None and telemetry.settings.http_access_log:
                return False  # obskit's access line says the same, with the trace id
        if isinstance(record.msg, str):
            record.msg = _ANSI.sub("", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                _ANSI.sub("", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def _install_dev_server_filter() -> None:
    """Put one :class:`DevServerLines` on the ``werkzeug`` logger (once per process)."""
    werkzeug_log = logging.getLogger("werkzeug")
    if not any(isinstance(f, DevServerLines) for f in werkzeug_log.filters):
        werkzeug_log.addFilter(DevServerLines())
