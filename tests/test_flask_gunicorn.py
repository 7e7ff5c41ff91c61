"""The example Flask app under a real gunicorn (sync and gthread workers) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.receivers import OtlpHttpReceiver
from tests.servers import Server, assert_no_leaks, trace_id_of


@pytest.fixture
def gunicorn(tmp_path: Path, http_receiver: OtlpHttpReceiver) -> Iterator[Callable[..., Server]]:
    """Start gunicorn (2 workers of the given class) serving ``app`` (examples.flask_app),
    with ``env`` added to the server's environment; ``hooks``: with obskit's hooks
    (examples/gunicorn.conf.py), as deployed, so one /metrics port serves both workers."""
    started: list[Server] = []

    def start(
        worker_class: str,
        app: str = "examples.flask_app:create_app()",
        hooks: bool = False,
        **env: str,
    ) -> Server:
        threads = ["--threads", "4"] if worker_class == "gthread" else []
        if hooks:
            env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"multiproc-{len(started)}"), **env}
        server = Server(
            tmp_path,
            [
                "gunicorn",
                *(["-c", "examples/gunicorn.conf.py"] if hooks else []),
                "--workers",
                "2",
                "--worker-class",
                worker_class,
                *threads,
                "--bind",
                "127.0.0.1:{port}",
                "--graceful-timeout",
                "5",
                app,
            ],
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


@pytest.mark.slow
@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_spans_and_log_lines_of_each_request_share_its_trace_id(
    worker_class: str, gunicorn: Callable[..., Server], http_receiver: OtlpHttpReceiver
) -> None:
    """Real requests: server spans with their @traced children reach the OTLP receiver,
    and every stdout line of a request carries that request's trace id."""
    server = gunicorn(worker_class)
    requests = {}
    for n in range(20):
        status, headers, _ = server.get(f"/post/{n}?request_id=req-{n}")
        assert status == 200
        requests[f"req-{n}"] = trace_id_of(headers)
    spans = http_receiver.wait_for_traces(set(requests.values()), 2)
    by_trace: dict[str, list[Any]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    for trace_id in requests.values():
        server_span, child = sorted(by_trace[trace_id], key=lambda s: s.kind, reverse=True)
        assert server_span.name == "GET /post/<int:post_id>"
        assert server_span.kind == 2  # SPAN_KIND_SERVER
        assert child.name == "examples.flask_app.load_post"
        assert child.parent_span_id == server_span.span_id
        assert server_span.resource["service.name"] == "flask-example"
    server.stop()
    lines = server.lines()
    for request_id, trace_id in requests.items():
        mine = [line for line in lines if line.get("request_id") == request_id]
        assert [line["event"] for line in mine] == [
            "showing post",
            "loading post",
            f"GET /post/{request_id[4:]} 200",
        ]
        assert {line["trace_id"] for line in mine} == {trace_id}
        assert [line for line in lines if line.get("trace_id") == trace_id] == mine


@pytest.mark.slow
def test_concurrent_requests_never_leak_ids_between_requests(
    gunicorn: Callable[..., Server],
) -> None:
    """500 requests over 8 client threads to gthread workers: each request's lines carry
    only its own request_id and trace id."""
    server = gunicorn("gthread")

    def call(n: int) -> tuple[str, str]:
        status, headers, _ = server.get(f"/post/{n}?request_id=r{n}")
        assert status == 200
        return f"r{n}", trace_id_of(headers)

    with ThreadPoolExecutor(max_workers=8) as pool:
        expected = dict(pool.map(call, range(500)))
    server.stop()
    assert_no_leaks(server.lines(), expected)
