"""httpx: a CLIENT span, propagation headers and the client histogram for each request
sent over the network, by ``httpx.Client`` and ``httpx.AsyncClient`` alike.

Patched (by :mod:`obskit._lifecycle.library_hooks`, when ``httpx`` is imported):

- ``Client.send`` / ``AsyncClient.send``: one logical call, its redirect hops and
  authentication round trips included (each is its own request, numbered by
  ``http.request.resend_count``);
- ``HTTPTransport.handle_request`` / ``AsyncHTTPTransport.handle_async_request``: one
  request sent over the network; the span and the headers are its. A transport of your
  own that does not call them (``MockTransport``, ``WSGITransport``) is not instrumented.

The span ends when the transport returns the response, its headers in: its body (read by
``send()`` unless streamed) is not part of the span.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import httpx
import wrapt

from obskit._http import client_call
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import library_hooks

NAME = "httpx"


def patch(module: ModuleType) -> None:
    """Instrument the clients' ``send`` and the network transports (for the process's life)."""
    wrapt.wrap_function_wrapper(httpx.Client, "send", client_call.logical_call(NAME))
    wrapt.wrap_function_wrapper(httpx.AsyncClient, "send", _send_async)
    wrapt.wrap_function_wrapper(httpx.HTTPTransport, "handle_request", _handle)
    wrapt.wrap_function_wrapper(httpx.AsyncHTTPTransport, "handle_async_request", _handle_async)


async def _send_async(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if not library_hooks.enabled(NAME):
        return await wrapped(*args, **kwargs)
    token = client_call.enter_logical()
    if token is None:
        return await wrapped(*args, **kwargs)
    try:
        return await wrapped(*args, **kwargs)
    finally:
        client_call.exit_logical(token)


def _begin(args: Any, kwargs: Any) -> client_call.ClientCall | None:
    try:
        request = args[0] if args else kwargs["request"]
        method, url, headers = request.method, str(request.url), request.headers
    except Exception as error:
        _internal_errors.report(client_call.COMPONENT, error)
        return None
    return client_call.begin(method, url, headers)


def _end(call: client_call.ClientCall, response: Any) -> None:
    status = getattr(response, "status_code", None)
    try:
        version = client_call.protocol_version(response.http_version)
    except Exception:  # (a response without the extension: the version is unknown)
        version = None
    call.end(status if type(status) is int else None, None, version)


def _handle(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if not library_hooks.enabled(NAME):
        return wrapped(*args, **kwargs)
    call = _begin(args, kwargs)
    if call is None:
        return wrapped(*args, **kwargs)
    try:
        response = wrapped(*args, **kwargs)
    except BaseException as error:
        call.end(None, error)
        raise
    _end(call, response)
    return response


async def _handle_async(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if not library_hooks.enabled(NAME):
        return await wrapped(*args, **kwargs)
    call = _begin(args, kwargs)
    if call is None:
        return await wrapped(*args, **kwargs)
    try:
        response = await wrapped(*args, **kwargs)
    except BaseException as error:
        call.end(None, error)
        raise
    _end(call, response)
    return response
