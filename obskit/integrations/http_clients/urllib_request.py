"""urllib.request: a CLIENT span, propagation headers and the client histogram for each
HTTP(S) request ``urlopen()`` (or any opener) sends.

Patched (by :mod:`obskit._lifecycle.library_hooks`, when ``urllib.request`` is
imported; OpenTelemetry calls this instrumentation ``urllib``):

- ``OpenerDirector.open``: one logical call; the redirects its ``HTTPRedirectHandler``
  follows are its hops (each its own request, numbered by ``http.request.resend_count``);
- ``HTTPHandler.http_open`` / ``HTTPSHandler.https_open``: one request sent; the span
  and the headers are its. The headers are added as *unredirected* headers, so a
  redirect hop carries its own.

The span ends when the handler returns the response, its headers in (an error status is
raised as ``HTTPError`` afterwards, by the opener: the span has the status).
"""

from __future__ import annotations

import urllib.request
from types import ModuleType
from typing import Any

import wrapt
from opentelemetry.propagators.textmap import Setter

from obskit._http import client_call
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import library_hooks

NAME = "urllib"


class _RequestHeaders(Setter[urllib.request.Request]):
    """Sets a propagation header as an unredirected header of a ``Request``."""

    def set(self, carrier: urllib.request.Request, key: str, value: str) -> None:
        carrier.add_unredirected_header(key, value)


_SETTER = _RequestHeaders()


def patch(module: ModuleType) -> None:
    """Instrument ``OpenerDirector.open`` and the HTTP(S) handlers (for the process's life)."""
    wrapt.wrap_function_wrapper(
        urllib.request.OpenerDirector, "open", client_call.logical_call(NAME)
    )
    wrapt.wrap_function_wrapper(urllib.request.HTTPHandler, "http_open", _http_open)
    https = getattr(urllib.request, "HTTPSHandler", None)  # (absent without ssl)
    if https is not None:
        wrapt.wrap_function_wrapper(https, "https_open", _http_open)


def _begin(request: Any) -> client_call.ClientCall | None:
    try:
        method, url = request.get_method(), request.full_url
    except Exception as error:
        _internal_errors.report(client_call.COMPONENT, error)
        return None
    return client_call.begin(method, url, request, _SETTER)


def _http_open(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if not library_hooks.enabled(NAME):
        return wrapped(*args, **kwargs)
    call = _begin(args[0] if args else kwargs.get("req"))
    if call is None:
        return wrapped(*args, **kwargs)
    try:
        response = wrapped(*args, **kwargs)
    except BaseException as error:
        call.end(None, error)
        raise
    client_call.end_with_response(call, response)
    return response
