"""aiohttp's client: a CLIENT span, propagation headers and the client histogram for each
request a ``ClientSession`` sends, through aiohttp's public tracing API.

Patched (by :mod:`obskit._lifecycle.library_hooks`, when ``aiohttp`` is imported):
``ClientSession.__init__`` adds one ``aiohttp.TraceConfig`` of obskit's to each session
made while the instrumentation is on (a session made before ``init()`` is not traced).
Its callbacks map a request to spans:

- ``on_request_start``: the first request's span begins, its headers are set;
- ``on_request_redirect``: that request ends with its 3xx status; the next hop gets its
  own span (``http.request.resend_count``) and headers;
- ``on_request_end`` / ``on_request_exception``: the last request ends, with the
  response's status (its headers are in; the body is read later and is not part of the
  span) or the exception.
"""

from __future__ import annotations

from types import ModuleType, SimpleNamespace
from typing import Any

import aiohttp
import wrapt
from yarl import URL

from obskit._http import client_call
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import library_hooks

NAME = "aiohttp-client"
#: The attribute of aiohttp's per-request trace context that holds obskit's call.
_CALL = "obskit_call"


def patch(module: ModuleType) -> None:
    """Add obskit's trace config to every ``ClientSession`` made from now on."""
    wrapt.wrap_function_wrapper(aiohttp.ClientSession, "__init__", _session_init)


def _session_init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if not library_hooks.enabled(NAME):
        return wrapped(*args, **kwargs)
    try:
        kwargs = {**kwargs, "trace_configs": [*(kwargs.get("trace_configs") or ()), trace_config()]}
    except Exception as error:
        _internal_errors.report(client_call.COMPONENT, error)
    return wrapped(*args, **kwargs)


def trace_config() -> aiohttp.TraceConfig:
    """A ``TraceConfig`` whose callbacks make obskit's client spans and metrics."""
    config = aiohttp.TraceConfig()
    config.on_request_start.append(_on_start)
    config.on_request_redirect.append(_on_redirect)
    config.on_request_end.append(_on_end)
    config.on_request_exception.append(_on_exception)
    return config


def _protocol(response: Any) -> str | None:
    return client_call.protocol_version(tuple(getattr(response, "version", None) or ()))


async def _on_start(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceRequestStartParams,
) -> None:
    if not library_hooks.enabled(NAME):
        return
    # Not marked open in the task's context: aiohttp's call nests no other library, and a
    # callback that never came would leave the mark set for the task's later calls.
    call = client_call.begin(params.method, str(params.url), params.headers, mark_open=False)
    setattr(context, _CALL, call)


async def _on_redirect(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceRequestRedirectParams,
) -> None:
    call: client_call.ClientCall | None = getattr(context, _CALL, None)
    if call is None:
        return
    try:
        response = params.response
        location = response.headers.get("Location") or response.headers.get("URI")
        if not location:
            return  # aiohttp follows no redirect without one: this response is the last
        status = response.status
        method = params.method
        if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
            method = "GET"
        url = str(params.url.join(URL(location)))
    except Exception as error:
        _internal_errors.report(client_call.COMPONENT, error)
        return
    call.resent(url, params.headers, None, method, status, None, _protocol(response))


async def _on_end(
    session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestEndParams
) -> None:
    call: client_call.ClientCall | None = getattr(context, _CALL, None)
    if call is not None:
        call.end(params.response.status, None, _protocol(params.response))


async def _on_exception(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceRequestExceptionParams,
) -> None:
    call: client_call.ClientCall | None = getattr(context, _CALL, None)
    if call is not None:
        error = params.exception
        # raise_for_status: the response came, with this status
        status = error.status if isinstance(error, aiohttp.ClientResponseError) else None
        call.end(status or None, error)
