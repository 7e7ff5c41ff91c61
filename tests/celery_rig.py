"""A real Celery worker for the tests: ``celery -A tests.apps.celery_app worker`` (prefork)
as a subprocess of its own process group, its stdout in a file, its dedicated
``/metrics`` on a free port of 127.0.0.1, and producer scripts run beside it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.prometheus_server import free_port
from tests.reliability.unavailable import unavailable
from tests.servers import ROOT, clean_env, run_python, scrape_when_up


def need_celery() -> None:
    """Skip (fail under CI=true) when Celery or its redis client is not installed."""
    try:
        import celery  # noqa: F401 - the worker and the producers use it
        import redis  # noqa: F401 - the broker's client (celery's [redis] extra)
    except ImportError:
        unavailable("celery is not installed (pip install 'celery[redis]')")


class CeleryWorker:
    """A prefork worker of ``tests.apps.celery_app`` exporting to ``endpoint``."""

    def __init__(
        self,
        workdir: Path,
        broker: str,
        endpoint: str,
        *options: str,
        concurrency: int = 2,
        env: dict[str, str] | None = None,
    ) -> None:
        need_celery()
        self.metrics_dir = workdir / "metrics"
        self.metrics_port = free_port()
        self.broker = broker
        self.stdout_path = workdir / "worker.out"
        self.stderr_path = workdir / "worker.err"
        self._stdout = self.stdout_path.open("w")
        self._stderr = self.stderr_path.open("w")
        args = ["--pool", "prefork", "--concurrency", str(concurrency), "--loglevel", "info"]
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.apps.celery_app",
                "worker",
                *args,
                *options,
            ],
            cwd=ROOT,
            env=clean_env(
                **{
                    "BROKER": broker,
                    "PYTHONUNBUFFERED": "1",
                    "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                    "OTEL_BSP_SCHEDULE_DELAY": "100",
                    "OBSKIT_LOG_FORMAT": "json",
                    "OBSKIT_METRICS_PORT": str(self.metrics_port),
                    "OBSKIT_METRICS_ADDR": "127.0.0.1",
                    "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
                    **(env or {}),
                }
            ),
            stdout=self._stdout,
            stderr=self._stderr,
            start_new_session=True,  # its pool children are stopped with it
        )

    def __enter__(self) -> CeleryWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def send(self, code: str, endpoint: str | None = None, timeout: float = 90) -> str:
        """Run producer ``code`` (with ``from tests.apps.celery_app import *``) beside the
        worker, exporting its spans to ``endpoint`` (if given); return its stdout (failing
        with both sides' stderr if it failed)."""
        env = {"BROKER": self.broker, "SERVICE": "producer"}
        if endpoint is None:
            env["OTEL_TRACES_EXPORTER"] = "none"
        else:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
        result = run_python("from tests.apps.celery_app import *\n" + code, env, timeout=timeout)
        assert result.returncode == 0, result.stderr[-3000:] + self.errors()
        return result.stdout

    def errors(self) -> str:
        return "\n--- worker stderr:\n" + self.stderr_path.read_text()[-3000:]

    def lines(self) -> list[dict[str, Any]]:
        """The worker's stdout lines that are JSON objects (its log lines)."""
        found = []
        for line in self.stdout_path.read_text().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    found.append(json.loads(line))
        return found

    def assert_no_errors(self) -> None:
        """No obskit internal error and no failing signal receiver in the worker's logs."""
        text = self.stdout_path.read_text() + self.stderr_path.read_text()
        assert "obskit internal error" not in text, text[-3000:]
        assert "Signal handler" not in text, text[-3000:]

    def scrape(self, timeout: float = 30) -> str:
        """The worker's dedicated ``/metrics`` in OpenMetrics (waiting, bounded, for it)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        return scrape_when_up(url, self.process, "application/openmetrics-text", timeout)

    def stop(self, timeout: float = 30) -> int | None:
        """Warm shutdown (SIGTERM), then the whole process group killed; the exit code."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):  # the pool children, hung or not
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            self._stdout.close()
            self._stderr.close()
        return self.process.returncode
