"""obskit's /metrics apps answer as prometheus-client's: negotiation, gzip, methods, bytes.

These are the contract: they run with the accelerators as ``init()`` decides them (on,
unless ``OBSKIT_FAST_PATHS=0``). The exposition accelerator's own equivalence tests
(every family kind, escaping, special values, its check) are in
``tests/fast/test_exposition.py``.
"""

from __future__ import annotations

import asyncio
import gzip
import inspect
import os
import socket
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Summary, make_asgi_app, make_wsgi_app
from prometheus_client import exposition as text_exposition
from prometheus_client.openmetrics import exposition as om_exposition

import obskit
from obskit._config.settings import load
from obskit._fast import status
from obskit._metrics import exposition as _exposition
from obskit._metrics import registry as _metrics
from obskit._metrics.registry import ObskitCounter, ObskitHistogram
from tests.conftest import wsgi_request
from tests.servers import raw_get


@pytest.fixture(autouse=True)
def _accelerators_as_configured() -> None:
    """The accelerators as ``init()`` decides them from the environment (these tests also
    make registries of their own, without ``init()``)."""
    status.decide(load(os.environ, {}).fast_paths)


def exemplar(n: int) -> dict[str, str]:
    return {"trace_id": f"{n:032x}", "span_id": f"{n:016x}"}


#: Whether prometheus-client's encoders take ``escaping=`` (from 0.23.1; before, every
#: scrape is what ``underscores`` gives, and Accept headers cannot ask for another).
TAKES_ESCAPING = "escaping" in inspect.signature(text_exposition.generate_latest).parameters


def upstream(registry: Any, openmetrics: bool, escaping: str = "underscores") -> bytes:
    """prometheus-client's own rendering (the reference), by its public ``generate_latest``
    of the installed version: with ``escaping`` where it takes one, else (only
    ``underscores`` exists then) without."""
    encode = om_exposition.generate_latest if openmetrics else text_exposition.generate_latest
    if TAKES_ESCAPING:
        return bytes(encode(registry, escaping=escaping))
    assert escaping == "underscores", f"prometheus-client before 0.23.1 has no {escaping!r}"
    return bytes(encode(registry))


ACCEPTS = [
    "",
    "text/plain",
    "text/plain; version=0.0.4",
    "text/plain; version=1.0.0; escaping=allow-utf-8",
    "text/plain; version=1.0.0; escaping=dots",
    "application/openmetrics-text",
    "application/openmetrics-text; version=1.0.0",
    "application/openmetrics-text; version=2.0.0; escaping=values",
    "application/openmetrics-text; version=0.0.1",
    "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "application/json",
]


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    ObskitCounter("req", "Requests.", ["route"], registry=registry).labels('/a"b').inc()
    ObskitHistogram("lat", "Latency.", ["route"], registry=registry).labels("/").observe(
        0.2, exemplar(5)
    )
    Summary("sum", "Summary.", registry=registry).observe(1)
    return registry


@pytest.mark.parametrize("accept", ACCEPTS)
def test_negotiation_and_wsgi_responses_match(accept: str) -> None:
    """For each Accept header: the same content type as prometheus-client's negotiation,
    and obskit's WSGI app answers with the same status, headers and body (gzip too)."""
    registry = _registry()
    ours, theirs = _exposition.make_wsgi_app(registry), make_wsgi_app(registry)
    _, content_type = text_exposition.choose_encoder(accept)
    assert _exposition.choose_encoder(accept)[1] == content_type
    for encoding in ("", "gzip", "br, gzip;q=0.5"):
        headers = [("Accept", accept), ("Accept-Encoding", encoding)]
        mine = wsgi_request(ours, "/metrics", headers)
        reference = wsgi_request(theirs, "/metrics", headers)
        assert mine[:2] == reference[:2]
        assert mine[1]["Content-Type"] == content_type
        if "gzip" in encoding:
            assert mine[1]["Content-Encoding"] == "gzip"
            assert gzip.decompress(mine[2]) == gzip.decompress(reference[2])
        else:
            assert mine[2] == reference[2]


def test_wsgi_methods_favicon_and_name_filter_match() -> None:
    """OPTIONS, POST and /favicon.ico get current prometheus-client's answers on every
    version (before 0.21 it served the metrics to any method, and until later a blank
    header with the favicon); ``?name[]=`` gets the installed prometheus-client's."""
    registry = _registry()
    ours, theirs = _exposition.make_wsgi_app(registry), make_wsgi_app(registry)

    def call(app: Any, method: str, path: str, query: str = "") -> tuple[Any, ...]:
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "HTTP_ACCEPT": "application/openmetrics-text",
        }
        reply: list[Any] = []
        body = app(environ, lambda status, headers: reply.extend([status, headers]))
        return (*reply, b"".join(body))

    allow = [("Allow", "OPTIONS,GET")]
    assert call(ours, "OPTIONS", "/metrics") == ("200 OK", allow, b"")
    refused = b"# HTTP 405 Method Not Allowed: POST; use OPTIONS or GET\n"
    assert call(ours, "POST", "/metrics") == ("405 Method Not Allowed", allow, refused)
    assert call(ours, "GET", "/favicon.ico") == ("200 OK", [], b"")
    query = "name[]=req_total&name[]=lat_bucket"
    assert call(ours, "GET", "/metrics", query) == call(theirs, "GET", "/metrics", query)
    assert b"lat_bucket" in call(ours, "GET", "/metrics", "name[]=lat_bucket")[2]


def test_asgi_app_matches() -> None:
    """obskit's ASGI app answers as prometheus-client's does, in both formats and gzipped."""
    registry = _registry()

    async def call(app: Any, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "headers": headers, "query_string": b""}
        await app(scope, receive, send)
        return sent

    for headers in (
        [],
        [(b"accept", b"application/openmetrics-text")],
        [(b"Accept", b"text/plain"), (b"accept-encoding", b"gzip")],
    ):
        mine = asyncio.run(call(_exposition.make_asgi_app(registry), headers))
        reference = asyncio.run(call(make_asgi_app(registry), headers))
        assert mine[0] == reference[0]
        unzip = gzip.decompress if headers and b"gzip" in headers[-1][1] else bytes
        assert unzip(mine[1]["body"]) == unzip(reference[1]["body"])


def test_metrics_wsgi_app_serves_the_fast_rendering() -> None:
    """``obskit.metrics_wsgi_app()`` serves the fast rendering: the OpenMetrics body
    carries the histogram's trace exemplar and equals prometheus-client's bytes."""
    obskit.init(service_name="exposition", metrics_process_collectors=False)
    with obskit.span("work"):
        obskit.histogram("job_seconds", "Jobs.", ["kind"]).labels("a").observe(0.2)
    status, headers, body = wsgi_request(
        obskit.metrics_wsgi_app(), "/metrics", [("Accept", "application/openmetrics-text")]
    )
    assert status == 200
    assert headers["Content-Type"] == om_exposition.CONTENT_TYPE_LATEST
    assert b'job_seconds_bucket{kind="a",le="0.25"} 1.0 # {span_id="' in body
    assert body == upstream(_metrics.store().registry, True)


def test_standalone_metrics_server_serves_the_fast_rendering() -> None:
    """The dedicated /metrics port (``init(metrics_port=...)``) serves the same bytes as
    prometheus-client renders, with its content types, over real HTTP (OpenMetrics when
    asked, gzip when accepted)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handle = obskit.init(
        metrics_port=port, metrics_addr="127.0.0.1", metrics_process_collectors=False
    )
    assert handle.metrics_server is not None
    with obskit.span("work"):
        obskit.histogram("served_seconds", "Served.", ["kind"]).labels('a"b').observe(0.2)
    registry = _metrics.store().registry
    for accept, openmetrics in (("application/openmetrics-text", True), ("", False)):
        for encoding in ("", "gzip"):
            # http.client, which obskit does not instrument: a urllib scrape from this
            # process would add its own client request to the registry it compares with.
            status, headers, body = raw_get(
                port, "/metrics", [("Accept", accept), ("Accept-Encoding", encoding)]
            )
            assert status == 200
            assert headers["content-type"] == text_exposition.choose_encoder(accept)[1]
            if encoding:
                assert headers["content-encoding"] == "gzip"
                body = gzip.decompress(body)
            assert body == upstream(registry, openmetrics)
