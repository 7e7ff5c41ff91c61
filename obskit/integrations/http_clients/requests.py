"""requests: a CLIENT span, propagation headers and the client histogram for each request
a ``Session`` sends (``requests.get()`` and friends use one).

Patched (by :mod:`obskit._lifecycle.library_hooks`, when ``requests`` is imported):

- ``Session.send``: one logical call, its redirect hops included (each hop sent is its own
  request, numbered by ``http.request.resend_count``);
- ``HTTPAdapter.send``: one request sent; the span and the headers are its. urllib3 under
  it passes through (one span, not two), except for a retry its ``Retry`` makes.

The span ends when the adapter returns the response: its headers are in, its body is read
later (by ``Session.send`` unless ``stream=True``) and is not part of the span.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import requests
import requests.adapters
import wrapt

from obskit._http import client_call
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import library_hooks

NAME = "requests"


def patch(module: ModuleType) -> None:
    """Instrument ``Session.send`` and ``HTTPAdapter.send`` (for the process's life)."""
    wrapt.wrap_function_wrapper(requests.Session, "send", client_call.logical_call(NAME))
    wrapt.wrap_function_wrapper(requests.adapters.HTTPAdapter, "send", _adapter_send)


def _begin(request: Any) -> client_call.ClientCall | None:
    try:
        method, url, headers = request.method, request.url, request.headers
    except Exception as error:
        _internal_errors.report(client_call.COMPONENT, error)
        return None
    return client_call.begin(method or "GET", url, headers)


def _adapter_send(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if not library_hooks.enabled(NAME):
        return wrapped(*args, **kwargs)
    request = args[0] if args else kwargs.get("request")
    call = _begin(request)
    if call is None:
        return wrapped(*args, **kwargs)
    try:
        response = wrapped(*args, **kwargs)
    except BaseException as error:
        call.end(None, error)
        raise
    status, protocol = _outcome(response)
    call.end(status, None, protocol)
    return response


def _outcome(response: Any) -> tuple[int | None, str | None]:
    """The response's status and protocol version (None when a custom adapter's response
    lacks one)."""
    status = getattr(response, "status_code", None)
    version = getattr(getattr(response, "raw", None), "version", None)
    return (status if type(status) is int else None), client_call.protocol_version(version)
