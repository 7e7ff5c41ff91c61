"""Flask integration: ``obskit.instrument_flask(app)``.

A WSGI middleware around ``app.wsgi_app`` owns each request. A response built in
memory ends the request when the app returns it; a streamed one
(``stream_with_context`` or any generator body) ends after its last chunk, or at
``close()`` when the client goes away, with the request's context current while
each chunk is produced. Flask itself tells the middleware the route template (read
while Flask's request context is active), whether the response streams, and any
exception its error handling saw. Flask's behaviour and responses are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Flask, Response, got_request_exception
from flask.globals import _cv_request  # behind flask.request (Flask >= 2.3): no proxies

from obskit._http.server_request import ServerRequest, current_telemetry, excluded, server_of

_ENVIRON_KEY = "obskit.request"
StartResponse = Callable[..., Any]


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
    app.process_response = _observing(app.process_response)  # type: ignore[method-assign,assignment]
    got_request_exception.connect(_on_exception, app, weak=False)
    return app


def _current_request() -> Any:
    """Flask's current request object, or None outside a request context."""
    context = _cv_request.get(None)
    return context.request if context is not None else None


def _observing(process_response: Callable[[Response], Response]) -> Callable[[Response], Response]:
    """``app.process_response`` (Flask's documented hook for the final response, the
    one ``request_finished`` is sent with), noting the route template (read while the
    request context is active) and whether the response streams.

    An instance attribute wrapping the bound method: cheaper per request than a
    ``request_finished`` receiver, which blinker looks up and checks on every send.
    """

    def observing_process_response(response: Response) -> Response:
        state = None
        try:
            current = _current_request()
            state = current.environ.get(_ENVIRON_KEY) if current is not None else None
            if state is not None:
                state.route = _route(current)  # first: known even if the hook raises
        except Exception as error:
            from obskit._lifecycle import internal_errors as _internal_errors

            _internal_errors.report("flask", error)
        response = process_response(response)
        if state is not None:
            try:
                state.streamed = response.is_streamed
            except Exception as error:
                from obskit._lifecycle import internal_errors as _internal_errors

                _internal_errors.report("flask", error)
        return response

    return observing_process_response


def _on_exception(sender: Flask, exception: BaseException, **extra: Any) -> None:
    current = _current_request()
    state = current.environ.get(_ENVIRON_KEY) if current is not None else None
    if state is not None:
        state.route = _route(current)
        state.record_exception(exception)


def _route(current: Any) -> str | None:
    rule = current.url_rule
    return rule.rule if rule is not None else None


class _Middleware:
    """The WSGI middleware that brackets each request with a ServerRequest."""

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        telemetry = current_telemetry()
        if telemetry is None:
            return self.wsgi_app(environ, start_response)
        settings = telemetry.settings
        path = environ.get("PATH_INFO", "") or "/"
        if settings.http_serve_metrics and path == settings.http_metrics_path:
            from obskit import metrics_wsgi_app

            served: Iterable[bytes] = metrics_wsgi_app()(environ, start_response)
            return served
        if settings.http_excluded_paths and excluded(path, settings.http_excluded_paths):
            return self.wsgi_app(environ, start_response)
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
            from obskit._lifecycle import internal_errors as _internal_errors

            _internal_errors.report("flask", error)
            return self.wsgi_app(environ, start_response)
        environ[_ENVIRON_KEY] = state

        def observing_start_response(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            try:
                code = int(status.split(" ", 1)[0])
                captured = (
                    {k.lower(): v for k, v in headers}
                    if state.captures_response_headers
                    else None  # nothing to capture: don't build the mapping
                )
                extra = state.response_headers(code, captured)
                headers = [*headers, *extra]
            except Exception as error:
                from obskit._lifecycle import internal_errors as _internal_errors

                _internal_errors.report("flask", error)
            return start_response(status, headers, *exc)

        token = state.attach()
        try:
            body = self.wsgi_app(environ, observing_start_response)
            if not state.streamed:
                state.finish()  # the body is already in memory
                return body
        except BaseException as error:
            state.finish(error)
            raise
        finally:
            state.detach(token)
        return _StreamedBody(body, state)


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
