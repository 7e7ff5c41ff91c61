"""The FastAPI test app under real servers on 127.0.0.1: uvicorn's own supervisor with 2
workers (a shared PROMETHEUS_MULTIPROC_DIR) and gunicorn with 2 uvicorn workers and
obskit's hooks. Spans at a real OTLP receiver, stdout lines matched by trace id, the
dedicated /metrics showing both workers' requests, scraped by a real Prometheus with
exemplars, no ids leaking between 500 concurrent requests, and a real WebSocket
connection's span continuing its caller's trace."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.prometheus_server import Prometheus, prometheus_binary
from tests.receivers import OtlpHttpReceiver
from tests.servers import Server, assert_no_leaks, trace_id_of

APP = "tests.apps.fastapi_app:served"
DURATION = "http_server_request_duration_seconds"
ROUTE = "/items/{item_id}"


def _uvicorn_args() -> list[str]:
    return [
        "uvicorn",
        "--factory",
        APP,
        "--workers",
        "2",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--timeout-graceful-shutdown",
        "5",
    ]


def _gunicorn_args() -> list[str]:
    pytest.importorskip("uvicorn_worker")
    return [
        "gunicorn",
        "-c",
        "examples/gunicorn.conf.py",
        "--workers",
        "2",
        "--worker-class",
        "uvicorn_worker.UvicornWorker",
        "--bind",
        "127.0.0.1:{port}",
        "--graceful-timeout",
        "5",
        f"{APP}()",
    ]


SERVERS = {"uvicorn": _uvicorn_args, "gunicorn+uvicorn_worker": _gunicorn_args}


@pytest.fixture
def serve(tmp_path: Path, http_receiver: OtlpHttpReceiver) -> Iterator[Callable[..., Server]]:
    """Start the app under ``kind`` (2 workers, a fresh multiprocess directory, spans to
    the receiver), ``env`` added to the server's environment."""
    started: list[Server] = []

    def start(kind: str, multiprocess: bool = True, **env: str) -> Server:
        if multiprocess:
            directory = tmp_path / f"multiproc-{len(started)}"
            directory.mkdir()
            env = {"PROMETHEUS_MULTIPROC_DIR": str(directory), **env}
        server = Server(
            tmp_path,
            SERVERS[kind](),
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": http_receiver.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "200",
                **env,
            },
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _get(server: Server, path: str, request_id: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"{server.url}{path}", headers={"x-request-id": request_id})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return reply.status, dict(reply.headers), reply.read()


def _count(text: str, route: str) -> tuple[float, list[str]]:
    """The request count of ``route`` on a scrape, and the trace ids of its exemplars."""
    total = 0.0
    trace_ids: list[str] = []
    for family in text_string_to_metric_families(text):
        if family.name != DURATION:
            continue
        for sample in family.samples:
            if sample.labels.get("http_route") != route:
                continue
            if sample.name == f"{DURATION}_count":
                total += sample.value
            if sample.exemplar is not None:
                trace_ids.append(sample.exemplar.labels["trace_id"])
    return total, trace_ids


def _wait_count(server: Server, route: str, wanted: float) -> tuple[float, list[str]]:
    """Scrape until ``route`` has ``wanted`` requests (bounded); the last count and
    exemplars."""
    deadline = time.monotonic() + 20
    while True:
        found = _count(server.scrape(), route)
        if found[0] >= wanted or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(SERVERS))
def test_spans_log_lines_and_both_workers_metrics_with_exemplars(
    kind: str,
    tmp_path: Path,
    serve: Callable[..., Server],
    http_receiver: OtlpHttpReceiver,
) -> None:
    """Real requests to 2 workers: SERVER spans with their @traced children reach the
    receiver, every stdout line of a request carries its trace id, and the dedicated
    /metrics, scraped by a real Prometheus, counts every request of both workers with
    exemplars of exported traces."""
    prometheus_binary()
    server = serve(kind)
    requests: dict[str, str] = {}
    for n in range(30):
        status, headers, body = _get(server, f"/items/{n}", f"req-{n}")
        assert status == 200
        assert json.loads(body) == {"id": n, "name": f"item {n}"}
        requests[f"req-{n}"] = trace_id_of(headers)
    spans = http_receiver.wait_for_traces(set(requests.values()), 2)
    by_trace: dict[str, list[Any]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    for trace_id in requests.values():
        server_span, child = sorted(by_trace[trace_id], key=lambda s: s.kind, reverse=True)
        assert server_span.name == f"GET {ROUTE}"
        assert server_span.kind == 2  # SPAN_KIND_SERVER
        assert child.name == "tests.apps.fastapi_app.load_item"
        assert child.parent_span_id == server_span.span_id
        assert server_span.resource["service.name"] == "fastapi-example"
    count, exemplars = _wait_count(server, ROUTE, 30)
    assert count == 30
    assert exemplars
    assert set(exemplars) <= set(requests.values())
    prometheus = Prometheus(tmp_path, [f"127.0.0.1:{server.metrics_port}"])
    try:
        now = time.time()
        series = prometheus.wait_for(
            "query_exemplars",
            query=f'{DURATION}_bucket{{http_route="{ROUTE}"}}',
            start=now - 120,
            end=now + 60,
        )
        stored = {e["labels"]["trace_id"] for s in series for e in s["exemplars"]}
        assert stored
        assert stored <= set(requests.values())
    finally:
        prometheus.close()
    server.stop()
    lines = server.lines()
    for request_id, trace_id in requests.items():
        mine = [line for line in lines if line.get("request_id") == request_id]
        n = request_id[4:]
        assert [line["event"] for line in mine] == [
            "reading item",
            "loading item",
            f"GET /items/{n} 200",
        ]
        assert {line["trace_id"] for line in mine} == {trace_id}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(SERVERS))
def test_500_concurrent_requests_never_leak_ids_and_all_are_counted(
    kind: str, serve: Callable[..., Server], http_receiver: OtlpHttpReceiver
) -> None:
    """500 requests over 8 client threads, some with background tasks: each request's
    lines carry only its own request id and trace id, and the dedicated /metrics counts
    all 500, served by both workers."""
    server = serve(kind)

    def call(n: int) -> tuple[str, str]:
        path = f"/items/{n}" if n % 5 else f"/items/{n}/sync"
        status, headers, _ = _get(server, path, f"r{n}")
        assert status == 200
        return f"r{n}", trace_id_of(headers)

    with ThreadPoolExecutor(max_workers=8) as pool:
        expected = dict(pool.map(call, range(500)))
    count, _ = _wait_count(server, ROUTE, 400)
    sync_count, _ = _wait_count(server, f"{ROUTE}/sync", 100)
    assert (count, sync_count) == (400, 100)
    server.stop()
    assert_no_leaks(server.lines(), expected)
    spans = http_receiver.wait_for_traces(set(expected.values()), 1)
    workers = {span.resource["process.pid"] for span in spans if span.kind == 2}
    assert len(workers) == 2  # both workers served: the count above is both workers'


@pytest.mark.slow
def test_uvicorn_workers_without_a_multiprocess_directory_warn_once(
    serve: Callable[..., Server],
) -> None:
    """uvicorn --workers 2 without PROMETHEUS_MULTIPROC_DIR: one warning naming the fix,
    from the first worker only; uvicorn's own access lines are left to obskit's."""
    server = serve("uvicorn", multiprocess=False)
    _get(server, "/items/1", "w1")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        warnings = [
            line
            for line in server.stdout_path.read_text().splitlines()
            if "PROMETHEUS_MULTIPROC_DIR is not set" in line
        ]
        if warnings:
            break
        time.sleep(0.2)
    server.stop()
    lines = server.lines()  # every stdout line is JSON: no uvicorn access line
    warned = [line for line in lines if "PROMETHEUS_MULTIPROC_DIR is not set" in line["event"]]
    assert len(warned) == 1
    assert "uvicorn runs 2 workers" in warned[0]["event"]
    access = [line["event"] for line in lines if line.get("logger") == "obskit.access"]
    assert "GET /items/1 200" in access


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(SERVERS))
def test_websocket_connection_is_one_server_span_continuing_the_callers_trace(
    kind: str, serve: Callable[..., Server], http_receiver: OtlpHttpReceiver
) -> None:
    """A real WebSocket client sending a traceparent, one message and a normal close: the
    receiver gets one SERVER span "WS /ws/{room}" continuing that trace, not an error,
    the handler's lines carry its trace id and no access line is written."""
    connect = pytest.importorskip("websockets.sync.client").connect
    caller, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    server = serve(kind)
    with connect(
        f"ws://127.0.0.1:{server.port}/ws/lobby",
        additional_headers={"traceparent": f"00-{caller}-{parent}-01"},
        open_timeout=10,
        close_timeout=10,
    ) as websocket:
        websocket.send("hi")
        assert websocket.recv(timeout=10) == "lobby: hi"
    spans = http_receiver.wait_for_traces({caller}, 1)
    server.stop()
    (span,) = [span for span in spans if span.trace_id == caller]
    assert (span.name, span.kind, span.parent_span_id) == ("WS /ws/{room}", 2, parent)
    assert span.status_code == 0  # STATUS_CODE_UNSET: a normal close is not an error
    assert span.attributes["http.route"] == "/ws/{room}"
    assert span.attributes["url.path"] == "/ws/lobby"
    lines = server.lines()
    mine = [line for line in lines if line.get("room") == "lobby"]
    assert [line["event"] for line in mine] == ["joined", "message", "left"]
    assert {line["trace_id"] for line in mine} == {caller}
    access = {line["event"] for line in lines if line.get("logger") == "obskit.access"}
    assert access == {"GET / 200"}  # the readiness probes' only
    assert [line for line in lines if line.get("level") == "error"] == []
