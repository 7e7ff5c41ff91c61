"""``ObskitMiddleware``: a server span, RED metrics and an access line per Django request.

Sync- and async-capable: under ASGI with an async handler it runs a real ``async
def`` path, so Django never has to push the chain through ``sync_to_async`` and
async views stay on the event loop. Put it first in ``MIDDLEWARE`` so it sees the
whole request, including other middleware.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.utils.log import log_response

from obskit._dumps import active_spans as _active_spans
from obskit._http.server_request import (
    ROUTE_LOOKUPS,
    ServerRequest,
    current_telemetry,
    excluded,
    server_of,
)
from obskit._lifecycle import internal_errors as _internal_errors

_STATE = "_obskit_request"
#: The ``request.META`` key holding (weakly) the request itself, so a dump of a request
#: in flight can name its route (resolved before the view runs).
REQUEST_META_KEY = "obskit.django.request"


def metrics_view(request: HttpRequest) -> HttpResponse:
    """A view serving obskit's metrics (OpenMetrics with exemplars when asked, gzip)."""
    from obskit._metrics.exposition import choose_encoder, gzip_accepted
    from obskit._metrics.registry import store

    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(store().exposition())
    response = HttpResponse(body, content_type=content_type)
    if gzip_accepted(request.headers.get("Accept-Encoding", "")):
        import gzip

        response.content = gzip.compress(body)
        response["Content-Encoding"] = "gzip"
    return response


class ObskitMiddleware:
    """Brackets every request with a ``ServerRequest``."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        from obskit.integrations.django.db import install

        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        install()

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        telemetry = current_telemetry()
        early = self._early_response(telemetry, request)
        if early is not None:
            return early if isinstance(early, HttpResponseBase) else self.get_response(request)
        state = _start(telemetry, request)
        if state is None:
            return self.get_response(request)
        token = state.attach()
        try:
            response = self.get_response(request)
            return _finish_or_stream(state, request, response)
        except BaseException as error:
            state.finish(error)
            raise
        finally:
            state.detach(token)

    async def __acall__(self, request: HttpRequest) -> Any:
        telemetry = current_telemetry()
        early = self._early_response(telemetry, request)
        if early is not None:
            if isinstance(early, HttpResponseBase):
                return early
            return await self.get_response(request)
        state = _start(telemetry, request)
        if state is None:
            return await self.get_response(request)
        token = state.attach()
        try:
            response = await self.get_response(request)
            return _finish_or_stream(state, request, response)
        except BaseException as error:
            state.finish(error)
            raise
        finally:
            state.detach(token)

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        """Record a view's exception; Django's own 500 handling goes on unchanged."""
        state = getattr(request, _STATE, None)
        if state is not None:
            state.route = _route(request)
            state.record_exception(exception)

    @staticmethod
    def _early_response(telemetry: Any, request: HttpRequest) -> HttpResponseBase | bool | None:
        """The metrics response, True to pass through untraced, or None to trace."""
        if telemetry is None:
            return True
        settings = telemetry.settings
        if settings.http_serve_metrics and request.path == settings.http_metrics_path:
            return metrics_view(request)
        if excluded(request.path, settings.http_excluded_paths):
            return True
        return None


def _start(telemetry: Any, request: HttpRequest) -> ServerRequest | None:
    meta = request.META
    try:
        scope = getattr(request, "scope", None)
        protocol = (
            scope.get("http_version")
            if scope
            else str(meta.get("SERVER_PROTOCOL", "")).removeprefix("HTTP/")
        )
        address, port = server_of(meta)
        state = ServerRequest(  # by position: see ServerRequest
            telemetry,
            request.method or "GET",
            request.path,
            meta,
            request.scheme or "http",  # scheme
            meta.get("QUERY_STRING", ""),  # query
            address,  # server_address
            port,  # server_port
            meta.get("REMOTE_ADDR"),  # client_address
            protocol or None,
        )
    except Exception as error:
        _internal_errors.report("django", error)
        return None
    setattr(request, _STATE, state)
    if _active_spans.enabled():  # (read only by dumps and profiles)
        meta[REQUEST_META_KEY] = weakref.ref(request)
    return state


def _route(request: HttpRequest) -> str | None:
    match = getattr(request, "resolver_match", None)
    return match.route if match is not None and match.route else None


def _route_in_flight(meta: Any) -> str | None:
    """The route of a request still running (a dump of it), from its ``META``."""
    reference = meta.get(REQUEST_META_KEY)
    request = reference() if reference is not None else None
    return _route(request) if request is not None else None


ROUTE_LOOKUPS.append(_route_in_flight)


def _finish_or_stream(state: ServerRequest, request: HttpRequest, response: Any) -> Any:
    """Record the response; end now, or after the last chunk of a streamed response."""
    try:
        state.route = state.route or _route(request)
        if response.status_code >= 400:
            # Django logs 4xx/5xx responses after the middleware chain returns, which is
            # outside the request's span; log it here, in the span, with Django's own
            # function (which marks the response so Django does not log it twice).
            log_response(
                "%s: %s", response.reason_phrase, request.path, response=response, request=request
            )
        headers = None  # nothing to capture: don't build the mapping
        if state.captures_response_headers:
            headers = {name.lower(): value for name, value in response.items()}
            if response.cookies:  # Django adds its Set-Cookie headers after the middleware
                headers["set-cookie"] = ", ".join(
                    cookie.output(header="").strip() for cookie in response.cookies.values()
                )
        for name, value in state.response_headers(response.status_code, headers):
            response[name] = value
        if isinstance(response, StreamingHttpResponse):
            state.streamed = True
            if response.is_async:
                response.streaming_content = _astream(state, response.streaming_content)
            else:
                response.streaming_content = _stream(state, response.streaming_content)
            return response
    except Exception as error:
        _internal_errors.report("django", error)
    state.finish()
    return response


def _stream(state: ServerRequest, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Produce each chunk with the request's context current; end the request after."""
    error: BaseException | None = None
    try:
        while True:
            token = state.attach()
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            finally:
                state.detach(token)
            yield chunk
    except GeneratorExit:  # the server closed the response (client went away)
        raise
    except BaseException as raised:
        error = raised
        raise
    finally:
        token = state.attach()
        try:
            state.finish(error)
        finally:
            state.detach(token)


async def _astream(state: ServerRequest, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The async twin of ``_stream()``."""
    error: BaseException | None = None
    try:
        while True:
            token = state.attach()
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
            finally:
                state.detach(token)
            yield chunk
    except GeneratorExit:
        raise
    except BaseException as raised:
        error = raised
        raise
    finally:
        token = state.attach()
        try:
            state.finish(error)
        finally:
            state.detach(token)
