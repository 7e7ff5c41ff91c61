"""urllib3: a CLIENT span, propagation headers and the client histogram for each request
a connection pool sends, so that everything built on urllib3 (botocore, the Kubernetes
client, ...) is covered.

Patched (by :mod:`obskit._lifecycle.library_hooks`, when ``urllib3`` is imported):
``HTTPConnectionPool.urlopen``, which ``PoolManager`` (and ``urllib3.request()``) call for
each request and redirect hop. A retry or a redirect the pool makes itself re-enters
``urlopen`` with a longer ``Retry.history``: the request before it ends (with its status
or error) and the next one gets its own span with ``http.request.resend_count``. Under a
library that already opened the call (requests), a first ``urlopen`` passes through.

The headers are never written into the mapping the caller passed (a ``PoolManager``
passes its shared default headers): ``urlopen`` gets a copy with the propagation headers.
The span ends when ``urlopen`` returns: with ``preload_content=True`` (urllib3's default)
after the body is read, else when the headers are in.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import urllib3
import wrapt

from obskit._http import client_call
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import library_hooks

NAME = "urllib3"
#: Positions in ``urlopen(method, url, body, headers, retries, ...)`` (after ``self``).
_URL, _HEADERS, _RETRIES = 1, 3, 4
_SETTER = client_call.MappingSetter()


def patch(module: ModuleType) -> None:
    """Instrument ``HTTPConnectionPool.urlopen`` (for the process's life)."""
    wrapt.wrap_function_wrapper(urllib3.HTTPConnectionPool, "urlopen", _urlopen)


def _argument(args: Any, kwargs: Any, index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _with_argument(args: Any, kwargs: Any, index: int, name: str, value: Any) -> tuple[Any, Any]:
    if len(args) > index:
        return (*args[:index], value, *args[index + 1 :]), kwargs
    return args, {**kwargs, name: value}


def _history(retries: Any) -> tuple[int, Any]:
    """(requests sent before this one, the last of them) from a ``Retry``."""
    if isinstance(retries, urllib3.Retry) and retries.history:
        return len(retries.history), retries.history[-1]
    return 0, None


def _full_url(pool: Any, url: str) -> str:
    if "://" in url:  # (absolute: through a proxy)
        return url
    scheme = pool.scheme
    host = pool.host
    if ":" in host:
        host = f"[{host}]"
    port = pool.port
    if port is not None and port != (443 if scheme == "https" else 80):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{url}"


def _urlopen(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if not library_hooks.enabled(NAME):
        return wrapped(*args, **kwargs)
    try:
        sent, last = _history(_argument(args, kwargs, _RETRIES, "retries"))
        opened = client_call.current()
        passes = opened is not None and sent <= opened.retries_seen
        if not passes:
            method = args[0] if args else kwargs.get("method")
            url = _full_url(instance, _argument(args, kwargs, _URL, "url"))
            headers = client_call.copied_headers(
                _argument(args, kwargs, _HEADERS, "headers"), instance.headers
            )
    except Exception as error:
        _internal_errors.report(client_call.COMPONENT, error)
        passes = True
    if passes:  # (the open call's own request: the layer above records it)
        return wrapped(*args, **kwargs)
    if opened is not None:  # a retry (or redirect) of the open call's request
        opened.retries_seen = sent
        opened.resent(
            url,
            headers,
            _SETTER,
            method,
            getattr(last, "status", None),
            getattr(last, "error", None),
        )
        args, kwargs = _with_argument(args, kwargs, _HEADERS, "headers", headers)
        return wrapped(*args, **kwargs)
    call = client_call.begin(method, url, headers, _SETTER, resends=sent or None)
    if call is None:
        return wrapped(*args, **kwargs)
    call.retries_seen = sent
    args, kwargs = _with_argument(args, kwargs, _HEADERS, "headers", headers)
    try:
        response = wrapped(*args, **kwargs)
    except BaseException as error:
        call.end(None, error)
        raise
    client_call.end_with_response(call, response)
    return response
