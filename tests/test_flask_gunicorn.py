"""The example Flask app under a real gunicorn (sync and gthread workers) on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.prometheus_server import free_port
from tests.receivers import OtlpHttpReceiver

ROOT = Path(__file__).resolve().parents[1]


class Gunicorn:
    """gunicorn serving examples.flask_app with stdout captured to a file."""

    def __init__(self, workdir: Path, worker_class: str, receiver: OtlpHttpReceiver) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stdout_path = workdir / "stdout.log"
        self.stderr_path = workdir / "stderr.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OBSKIT_"))}
        env.update(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="200",
            OBSKIT_LOG_FORMAT="json",
            PYTHONUNBUFFERED="1",
        )
        threads = ["--threads", "4"] if worker_class == "gthread" else []
        self._stdout = self.stdout_path.open("w")
        self._stderr = self.stderr_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--workers",
                "2",
                "--worker-class",
                worker_class,
                *threads,
                "--bind",
                f"127.0.0.1:{self.port}",
                "--graceful-timeout",
                "5",
                "examples.flask_app:create_app()",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._stdout,
            stderr=self._stderr,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(self.stderr_path.read_text())
            try:
                with urllib.request.urlopen(f"{self.url}/", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(self.stderr_path.read_text())

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._stdout.close()
        self._stderr.close()

    def lines(self) -> list[dict[str, Any]]:
        """Every stdout line, each parsed as JSON (a non-JSON line fails the test)."""
        return [json.loads(line) for line in self.stdout_path.read_text().splitlines() if line]


@pytest.fixture
def gunicorn(
    tmp_path: Path, http_receiver: OtlpHttpReceiver
) -> Iterator[Callable[[str], Gunicorn]]:
    started: list[Gunicorn] = []

    def start(worker_class: str) -> Gunicorn:
        server = Gunicorn(tmp_path, worker_class, http_receiver)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.stop()


def _trace_id(headers: dict[str, str]) -> str:
    return headers["traceresponse"].split("-")[1]


@pytest.mark.slow
@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_spans_and_log_lines_of_each_request_share_its_trace_id(
    worker_class: str, gunicorn: Callable[[str], Gunicorn], http_receiver: OtlpHttpReceiver
) -> None:
    """Real requests: server spans with their @traced children reach the OTLP receiver,
    and every stdout line of a request carries that request's trace id."""
    server = gunicorn(worker_class)
    requests = {}
    for n in range(20):
        status, headers, _ = server.get(f"/post/{n}?request_id=req-{n}")
        assert status == 200
        requests[f"req-{n}"] = _trace_id(headers)
    spans = http_receiver.wait_for(len(requests) * 2 + 1, timeout=20)
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
    gunicorn: Callable[[str], Gunicorn],
) -> None:
    """500 requests over 8 client threads to gthread workers: each request's lines carry
    only its own request_id and trace id."""
    server = gunicorn("gthread")

    def call(n: int) -> tuple[str, str]:
        status, headers, _ = server.get(f"/post/{n}?request_id=r{n}")
        assert status == 200
        return f"r{n}", _trace_id(headers)

    with ThreadPoolExecutor(max_workers=8) as pool:
        expected = dict(pool.map(call, range(500)))
    server.stop()
    lines = server.lines()
    request_lines = [line for line in lines if "request_id" in line]
    assert len(request_lines) == 3 * 500
    leaks = [line for line in request_lines if line["trace_id"] != expected[line["request_id"]]]
    assert leaks == []
    by_trace = {trace_id: request_id for request_id, trace_id in expected.items()}
    stray = [
        line
        for line in lines
        if "trace_id" in line
        and line.get("request_id") not in (None, by_trace.get(line["trace_id"]))
    ]
    assert stray == []
