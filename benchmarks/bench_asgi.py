"""Cost per FastAPI request through the ASGI app (no network), hello-world route.

Cases, interleaved round by round in one process and one event loop, each on its own
app instance:

- bare FastAPI;
- OpenTelemetry's ``FastAPIInstrumentor.instrument_app`` (spans, through the same SDK
  provider);
- ``prometheus-fastapi-instrumentator`` (RED metrics);
- both together: the hand-wired equivalent of what obskit does;
- obskit: ``instrument_asgi`` (span + RED metrics with exemplars + access log line,
  written as JSON to /dev/null).

Each request is what a server hands the app: a scope (``GET /hello/world`` with the
headers a client sends), ``receive`` giving the request, ``send`` taking the response.
FastAPI's own request telemetry (0.16x) is turned off in every app, so the bare case is
bare. The instrumentor's spans and obskit's come from the same provider (obskit's),
whose ended spans go through a ``BatchSpanProcessor`` to an exporter that drops them
(``_floor.discard_spans``).

The peers are optional, installed in a virtualenv of their own with the installed SDK
pinned (``python -m obskit constraints > c.txt``; ``pip install -c c.txt -e .
opentelemetry-instrumentation-fastapi prometheus-fastapi-instrumentator``); absent ones
are skipped with a note. Run: ``python benchmarks/bench_asgi.py [rounds] [requests]``.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI

import obskit

sys.path.insert(0, str(Path(__file__).parent))
from _floor import discard_spans
from _per_request import measure_and_report

_SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/hello/world",
    "raw_path": b"/hello/world",
    "root_path": "",
    "query_string": b"",
    "headers": [
        (b"host", b"127.0.0.1:8000"),
        (b"user-agent", b"bench/1.0"),
        (b"accept", b"*/*"),
        (b"accept-encoding", b"gzip, deflate"),
        (b"connection", b"keep-alive"),
    ],
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 50000),
}
_REQUEST = {"type": "http.request", "body": b"", "more_body": False}


def hello_app() -> FastAPI:
    options: dict[str, Any] = {}
    if "telemetry" in inspect.signature(FastAPI).parameters:  # FastAPI's own, off
        options["telemetry"] = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(**options)

    @app.get("/hello/{name}")
    async def hello(name: str) -> dict[str, str]:
        return {"hello": name}

    return app


def driver(app: Any, loop: asyncio.AbstractEventLoop) -> Callable[[int], float]:
    """Seconds per request of ``GET /hello/world`` through ``app`` on ``loop``."""

    async def receive() -> dict[str, Any]:
        return _REQUEST

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200, message

    async def many(requests: int) -> None:
        for _ in range(requests):
            await app(dict(_SCOPE), receive, send)

    def run(requests: int) -> float:
        started = time.perf_counter()
        loop.run_until_complete(many(requests))
        return (time.perf_counter() - started) / requests

    return run


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 11
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    handle = obskit.init(service_name="bench", traces_exporter="none", log_format="json")
    assert handle.tracer_provider is not None
    discard_spans(handle.tracer_provider)  # the instrumentor's spans come from it too
    loop = asyncio.new_event_loop()
    notes: list[str] = []
    cases: dict[str, Callable[[int], float]] = {"bare FastAPI": driver(hello_app(), loop)}
    otel_app = prom_app = both_app = None
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        otel_app, both_app = hello_app(), hello_app()
        FastAPIInstrumentor.instrument_app(otel_app)
        FastAPIInstrumentor.instrument_app(both_app)
    except ImportError:
        notes.append("opentelemetry-instrumentation-fastapi not installed: its cases skipped")
    try:
        from prometheus_client import CollectorRegistry
        from prometheus_fastapi_instrumentator import Instrumentator

        prom_app = hello_app()
        Instrumentator(registry=CollectorRegistry()).instrument(prom_app)
        if both_app is not None:
            Instrumentator(registry=CollectorRegistry()).instrument(both_app)
    except ImportError:
        notes.append("prometheus-fastapi-instrumentator not installed: its cases skipped")
        both_app = None
    if otel_app is not None:
        cases["OTel FastAPIInstrumentor"] = driver(otel_app, loop)
    if prom_app is not None:
        cases["prometheus-fastapi-instrumentator"] = driver(prom_app, loop)
    if both_app is not None:
        cases["hand-wired: OTel + prometheus-fastapi-instr."] = driver(both_app, loop)
    cases["obskit.instrument_asgi"] = driver(obskit.instrument_asgi(hello_app()), loop)
    measure_and_report(cases, "bare FastAPI", rounds, requests, notes, "asgi")
    loop.close()
    obskit.shutdown()


if __name__ == "__main__":
    main()
