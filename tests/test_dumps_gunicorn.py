"""Dumps under a real gunicorn (examples.flask_app with obskit's hooks): WORKER TIMEOUT
reported and exported, ``kill -USR1`` on the master dumping every worker, and the pod
server's ``/debug/dump`` doing the same."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.receivers import OtlpHttpReceiver
from tests.reliability.rig import worker_pids
from tests.servers import Server

APP = "examples.flask_app:create_app()"
#: What init() logs in each worker, after installing its dump handler (no exporter set).
_NO_EXPORTER_HINT = "spans are created (their ids correlate logs) but not exported"


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start gunicorn with obskit's hooks, ``options`` added to its command line and
    ``env`` to its environment; stopped after the test."""
    started: list[Server] = []

    def start(*options: str, **env: str) -> Server:
        server = Server(
            tmp_path,
            [
                "gunicorn",
                "-c",
                "examples/gunicorn.conf.py",
                "--graceful-timeout",
                "5",
                "--bind",
                "127.0.0.1:{port}",
                *options,
                APP,
            ],
            {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"multiproc-{len(started)}"), **env},
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _traceparent(n: int) -> tuple[str, str]:
    trace_id = f"{n:032x}"
    return trace_id, f"00-{trace_id}-{n:016x}-01"


def _get_in_thread(url: str, traceparent: str) -> threading.Thread:
    """GET ``url`` from a thread (any answer or failure is fine: the request is the point)."""

    def get() -> None:
        request = urllib.request.Request(url, headers={"traceparent": traceparent})
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                reply.read()
        except (urllib.error.URLError, OSError):
            pass  # (a worker aborted mid-request closes the connection)

    thread = threading.Thread(target=get, daemon=True)
    thread.start()
    return thread


def _wait_for_lines(
    server: Server, found: Callable[[list[dict[str, Any]]], bool], seconds: float = 20
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    while True:
        lines = server.lines()
        if found(lines):
            return lines
        assert time.monotonic() < deadline, lines[-20:]
        time.sleep(0.1)


@pytest.mark.slow
def test_a_worker_timeout_logs_the_request_and_exports_its_span_as_an_error(
    gunicorn: Callable[..., Server], http_receiver: OtlpHttpReceiver
) -> None:
    """--timeout 2 and a request sleeping 10 s: gunicorn aborts the worker, which writes
    one "worker timeout" error line with the request's trace id, route and a stack ending
    in the sleeping view; its span reaches the receiver with status ERROR and
    error.type=worker_timeout."""
    server = gunicorn(
        "--workers",
        "1",
        "--timeout",
        "2",
        OTEL_EXPORTER_OTLP_ENDPOINT=http_receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    trace_id, traceparent = _traceparent(0x5EED)
    client = _get_in_thread(f"{server.url}/slow?seconds=10", traceparent)
    lines = _wait_for_lines(
        server, lambda seen: any(x.get("event") == "worker timeout" for x in seen)
    )
    client.join(30)
    (line,) = [x for x in lines if x.get("event") == "worker timeout"]
    assert line["level"] == "error"
    assert line["logger"] == "obskit.dumps"
    assert line["trace_id"] == trace_id
    assert line["http.route"] == "/slow"
    assert line["span.name"] == "GET /slow"
    assert line["gunicorn.timeout_s"] == 2
    assert line["running_ms"] >= 2000
    assert line["stack"].endswith(", in slow\n    time.sleep(seconds)\n")
    spans = [s for s in http_receiver.wait_for(1, timeout=20) if s.trace_id == trace_id]
    (span,) = spans
    assert span.name == "GET /slow"
    assert span.status_code == 2  # STATUS_CODE_ERROR
    assert span.attributes["error.type"] == "worker_timeout"
    assert span.attributes["http.route"] == "/slow"
    server.stop()
    noise = [x for x in server.lines() if "ended span" in str(x.get("event"))]
    assert noise == []


@pytest.mark.slow
@pytest.mark.parametrize("preload", [False, True])
def test_kill_usr1_on_the_master_dumps_every_thread_of_every_worker(
    preload: bool, gunicorn: Callable[..., Server]
) -> None:
    """Two sync workers, each in a request: SIGUSR1 to the master makes each worker write
    one dump, a line per thread, its busy main thread carrying its request's trace id
    and the view's frame; the master writes none (also with --preload, where the
    workers' own handlers are set after obskit's)."""
    server = gunicorn("--workers", "2", *(["--preload"] if preload else []))
    traces = dict([_traceparent(0xA1), _traceparent(0xB2)])
    clients = [
        _get_in_thread(f"{server.url}/stream?chunks=1&pause=4", parent)
        for parent in traces.values()
    ]
    _wait_for_lines(  # both requests are in their views: the workers are busy
        server,
        lambda seen: (
            {x.get("trace_id") for x in seen if x.get("event") == "streaming chunk"} == set(traces)
        ),
    )
    os.kill(server.process.pid, signal.SIGUSR1)
    lines = _wait_for_lines(
        server, lambda seen: len([x for x in seen if x.get("event") == "dump written"]) >= 2
    )
    for client in clients:
        client.join(30)
    workers = worker_pids(server)
    dumps = [x for x in lines if x.get("event") == "dump written"]
    assert sorted(x["process.pid"] for x in dumps) == workers
    busy_traces = set()
    for summary in dumps:
        stacks = [x for x in lines if x.get("dump.id") == summary["dump.id"]][:-1]
        assert [x["event"] for x in stacks] == ["thread stack"] * summary["threads"]
        assert len({x["thread.id"] for x in stacks}) == summary["threads"]
        (busy,) = [x for x in stacks if "trace_id" in x]
        assert busy["thread.main"] is True
        assert busy["http.route"] == "/stream"
        assert ", in generate\n" in busy["stack"]
        busy_traces.add(busy["trace_id"])
    assert busy_traces == set(traces)


@pytest.mark.slow
def test_the_pod_servers_dump_endpoint_dumps_every_worker(
    gunicorn: Callable[..., Server],
) -> None:
    """/debug/dump on the pod's metrics port (a process beside the master) answers 202
    and every worker writes a dump."""
    server = gunicorn("--workers", "2")
    # Both workers past init() (it logs this hint once its dump handler is in): a signal
    # that reaches a worker still loading the app is gunicorn's alone.
    _wait_for_lines(
        server, lambda seen: sum(_NO_EXPORTER_HINT in str(x.get("event")) for x in seen) >= 2
    )
    workers = worker_pids(server)
    server.scrape()  # (the pod server is up)
    url = server.metrics_url.replace("/metrics", "/debug/dump")
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.status == 202
        answer = json.loads(reply.read())
    assert f"pid {server.process.pid}" in answer["signalled"]
    lines = _wait_for_lines(
        server, lambda seen: len([x for x in seen if x.get("event") == "dump written"]) >= 2
    )
    dumps = [x for x in lines if x.get("event") == "dump written"]
    assert sorted(x["process.pid"] for x in dumps) == workers
    assert {x["dump.reason"] for x in dumps} == {"signal"}
