"""Real HTTP servers (gunicorn, uvicorn) run as subprocesses on 127.0.0.1 for the tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.prometheus_server import free_port

ROOT = Path(__file__).resolve().parents[1]


def clean_env(*, coverage: bool = True, **extra: str) -> dict[str, str]:
    """This environment without ``OTEL_*``/``OBSKIT_*`` variables (and ``COVERAGE_*``
    ones unless ``coverage``), with no ``/metrics`` port, plus ``extra``: a child
    configured only as the test says."""
    skipped = ("OTEL_", "OBSKIT_") + (() if coverage else ("COVERAGE_",))
    kept = {k: v for k, v in os.environ.items() if not k.startswith(skipped)}
    # No /metrics server on 0.0.0.0:9464 unless the test asks (Server gives each one a
    # port of its own on 127.0.0.1).
    return {**kept, "OBSKIT_METRICS_PORT": "0", **extra}


def run_python(
    code: str,
    env: dict[str, str] | None = None,
    *,
    coverage: bool = True,
    timeout: float = 60,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) in a fresh interpreter from the repository root, with
    :func:`clean_env` plus ``env``; output captured as text."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=clean_env(coverage=coverage, **(env or {})),
        cwd=ROOT,
        timeout=timeout,
        check=check,
    )


def scrape_when_up(url: str, process: subprocess.Popen[Any], accept: str, timeout: float) -> str:
    """GET ``url`` (a ``/metrics``), retried every 0.1 s while nothing listens yet, for
    at most ``timeout`` seconds or until ``process`` has ended."""
    request = urllib.request.Request(url, headers={"Accept": accept})
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return str(reply.read().decode())
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise
            time.sleep(0.1)


class Server:
    """A server started from ``args`` (``{port}`` is filled in), stdout captured to a file
    (or given to ``stdout``, a file descriptor). Its dedicated ``/metrics`` is on
    ``metrics_url`` (a free port on 127.0.0.1, unless ``env`` sets one)."""

    def __init__(
        self,
        workdir: Path,
        args: list[str],
        env: dict[str, str],
        ready_path: str = "/",
        measure_coverage: bool = True,
        stdout: int | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {"OBSKIT_METRICS_PORT": str(free_port()), "OBSKIT_METRICS_ADDR": "127.0.0.1", **env}
        self.metrics_port = int(env["OBSKIT_METRICS_PORT"])
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.stdout_path = workdir / f"stdout-{self.port}.log"
        self.stderr_path = workdir / f"stderr-{self.port}.log"
        # Latency-sensitive tests turn coverage off in the server: tracing every line
        # makes timings several times slower and much noisier.
        clean = clean_env(
            coverage=measure_coverage, PYTHONUNBUFFERED="1", OBSKIT_LOG_FORMAT="json", **env
        )
        self._stdout = self.stdout_path.open("w")
        self._stderr = self.stderr_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", *[arg.format(port=self.port) for arg in args]],
            cwd=ROOT,
            env=clean,
            stdout=self._stdout if stdout is None else stdout,
            stderr=self._stderr,
        )
        self._wait_ready(ready_path)

    def _wait_ready(self, path: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(self.stderr_path.read_text())
            try:
                with urllib.request.urlopen(f"{self.url}{path}", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(self.stderr_path.read_text())

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read()

    def scrape(self, accept: str = "application/openmetrics-text", timeout: float = 30) -> str:
        """The dedicated ``/metrics`` (waiting, bounded, for its server to be up)."""
        return scrape_when_up(self.metrics_url, self.process, accept, timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
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


def trace_id_of(headers: dict[str, str]) -> str:
    """The trace id from a response's ``traceresponse`` header."""
    return headers["traceresponse"].split("-")[1]


def raw_get(
    port: int, target: str, headers: Sequence[tuple[str, str]] = ()
) -> tuple[int, dict[str, str], bytes]:
    """GET ``target`` (sent verbatim on the request line: a path or an absolute URI) with
    ``headers`` as given: a name may repeat and values are sent as latin-1 bytes."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", f"127.0.0.1:{port}")
        for name, value in headers:
            connection.putheader(name, value.encode("latin-1"))
        connection.endheaders()
        reply = connection.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        connection.close()


def assert_no_leaks(lines: list[dict[str, Any]], expected: dict[str, str]) -> None:
    """Every line of a request (its ``request_id`` bound) carries that request's trace id
    (``expected``: request id -> trace id), three lines per request, and no other line
    carries one of those trace ids with another request id."""
    request_lines = [line for line in lines if "request_id" in line]
    assert len(request_lines) == 3 * len(expected)
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
