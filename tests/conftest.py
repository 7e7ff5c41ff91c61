"""Shared fixtures: a clean environment and a clean obskit for every test, real receivers,
a real redis-server."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import obskit
from obskit._metrics import registry as _registry
from tests.prometheus_server import free_port
from tests.receivers import BlackHole, OtlpGrpcReceiver, OtlpHttpReceiver
from tests.reliability.unavailable import unavailable

# django_server (the Django project served), postgres (a real PostgreSQL server)
pytest_plugins = ["pytester", "tests.django_rig", "tests.postgres_server", "tests.http_clients"]


@pytest.fixture(autouse=True)
def _clean_obskit(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Strip OTEL_*/OBSKIT_* from the environment (no /metrics port) and shut obskit down
    after the test.

    ``OBSKIT_TEST_FAST_PATHS=0`` runs the whole suite with every accelerator off (the
    CI job that proves the public-API paths serve every contract).
    """
    fast_paths = os.environ.get("OBSKIT_TEST_FAST_PATHS")
    for name in list(os.environ):
        if name.startswith(("OTEL_", "OBSKIT_")):
            monkeypatch.delenv(name)
    if fast_paths is not None:
        monkeypatch.setenv("OBSKIT_FAST_PATHS", fast_paths)
    # No dedicated /metrics server on 9464 unless a test asks for one (by a port of its
    # own, or by removing this to test the default).
    monkeypatch.setenv("OBSKIT_METRICS_PORT", "0")
    # No stuck-span watchdog unless a test asks: a slow test is not a stuck request.
    monkeypatch.setenv("OBSKIT_STUCK_AFTER", "0")
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


def _redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed (apt-get install redis-server)")
    return binary


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A redis-server of its own on a free 127.0.0.1 port (no persistence)."""
    port = free_port()
    options = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = subprocess.Popen(
        [_redis_binary(), *options, "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.kill()
        server.wait(timeout=10)
