"""Shared fixtures: a clean environment and a clean obskit for every test, real receivers."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import obskit
from obskit._metrics import registry as _registry
from tests.receivers import BlackHole, OtlpGrpcReceiver, OtlpHttpReceiver

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _clean_obskit(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Strip OTEL_*/OBSKIT_* from the environment and shut obskit down after the test.

    ``OBSKIT_TEST_FAST_PATHS=0`` runs the whole suite with every accelerator off (the
    CI job that proves the public-API paths serve every contract).
    """
    fast_paths = os.environ.get("OBSKIT_TEST_FAST_PATHS")
    for name in list(os.environ):
        if name.startswith(("OTEL_", "OBSKIT_")):
            monkeypatch.delenv(name)
    if fast_paths is not None:
        monkeypatch.setenv("OBSKIT_FAST_PATHS", fast_paths)
    yield
    obskit.shutdown(timeout=5)
    _registry.reset_for_tests()


@pytest.fixture
def http_receiver() -> Iterator[OtlpHttpReceiver]:
    receiver = OtlpHttpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def grpc_receiver() -> Iterator[OtlpGrpcReceiver]:
    receiver = OtlpGrpcReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


@pytest.fixture
def spans() -> Callable[..., InMemorySpanExporter]:
    """init(**settings) plus an in-memory exporter that collects obskit's finished spans."""

    def start(**settings: object) -> InMemorySpanExporter:
        handle = obskit.init(**settings)
        exporter = InMemorySpanExporter()
        assert handle.tracer_provider is not None
        handle.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        return exporter

    return start


def openmetrics() -> dict[str, Any]:
    """obskit's registry as parsed OpenMetrics families, by name."""
    from prometheus_client.openmetrics.exposition import generate_latest
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    text = generate_latest(_registry.store().registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def wsgi_request(
    app: Callable[..., Iterable[bytes]],
    path: str = "/",
    headers: Iterable[tuple[str, str]] = (),
    query: str = "",
) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` from a WSGI app as a server does (PEP 3333 environ, start_response,
    body read then closed); a header given twice is joined with "," as gunicorn does."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    for name, value in headers:
        key = "HTTP_" + name.upper().replace("-", "_")
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    reply: list[Any] = []
    body = app(environ, lambda status, headers, *exc: reply.extend([status, dict(headers)]))
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return int(reply[0].split(" ", 1)[0]), reply[1], data
