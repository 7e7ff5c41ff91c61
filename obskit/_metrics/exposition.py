"""``/metrics`` over WSGI and ASGI: prometheus-client's content negotiation, gzip and
answers, rendered by obskit's exposition accelerator when it is on.

This module uses prometheus-client's public API only: ``choose_encoder`` picks the
format, :func:`obskit._fast.exposition.encoder_for` swaps in the fast rendering of that
format (byte-identical) when the ``exposition`` accelerator is on, and otherwise the
encoder prometheus-client chose renders the scrape.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import exposition as _text

from obskit._fast import exposition as _fast_exposition
from obskit._fast.exposition import UNDERSCORES, render

__all__ = [
    "UNDERSCORES",
    "bake",
    "choose_encoder",
    "gzip_accepted",
    "make_asgi_app",
    "make_wsgi_app",
    "render",
]

_upstream_choose: Any = _text.choose_encoder
gzip_accepted: Any = _text.gzip_accepted


def choose_encoder(accept_header: str | None) -> tuple[Callable[[Any], bytes], str]:
    """prometheus-client's ``choose_encoder``; its encoder is the fast rendering of the
    same format when the exposition accelerator is on."""
    encoder, content_type = _upstream_choose(accept_header)
    return _fast_exposition.encoder_for(encoder), content_type


def bake(
    registry: Any, accept: str | None, accept_encoding: str | None, query: str
) -> tuple[str, list[tuple[str, str]], bytes]:
    """prometheus-client's ``_bake_output``: (status, headers, body) of a scrape."""
    encoder, content_type = choose_encoder(accept)
    params = parse_qs(query)
    if "name[]" in params:
        registry = registry.restricted_registry(params["name[]"])
    output = encoder(registry)
    headers = [("Content-Type", content_type)]
    if gzip_accepted(accept_encoding):
        output = gzip.compress(output)
        headers.append(("Content-Encoding", "gzip"))
    return "200 OK", headers, output


def make_wsgi_app(registry: Any) -> Callable[..., Any]:
    """prometheus-client's ``make_wsgi_app`` (same methods, headers, gzip), rendering fast."""

    def prometheus_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        method = environ["REQUEST_METHOD"]
        headers: list[tuple[str, str]]
        if method == "OPTIONS":
            status, headers, output = "200 OK", [("Allow", "OPTIONS,GET")], b""
        elif method != "GET":
            status = "405 Method Not Allowed"
            headers = [("Allow", "OPTIONS,GET")]
            output = f"# HTTP {status}: {method}; use OPTIONS or GET\n".encode()
        elif environ["PATH_INFO"] == "/favicon.ico":
            status, headers, output = "200 OK", [], b""
        else:
            status, headers, output = bake(
                registry,
                environ.get("HTTP_ACCEPT"),
                environ.get("HTTP_ACCEPT_ENCODING"),
                environ.get("QUERY_STRING", ""),
            )
        start_response(status, headers)
        return [output]

    return prometheus_app


def make_asgi_app(registry: Any) -> Callable[..., Any]:
    """prometheus-client's ``make_asgi_app``, rendering fast."""

    async def prometheus_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope.get("type") == "http"
        pairs = scope.get("headers") or []
        accept = ",".join(
            v.decode("utf8") for n, v in pairs if n.decode("utf8").lower() == "accept"
        )
        encoding = ",".join(
            v.decode("utf8") for n, v in pairs if n.decode("utf8").lower() == "accept-encoding"
        )
        status, headers, output = bake(
            registry, accept, encoding, scope.get("query_string", b"").decode("utf8")
        )
        payload = await receive()
        if payload.get("type") == "http.request":
            await send(
                {
                    "type": "http.response.start",
                    "status": int(status.split(" ")[0]),
                    "headers": [tuple(x.encode("utf8") for x in h) for h in headers],
                }
            )
            await send({"type": "http.response.body", "body": output})

    return prometheus_app
