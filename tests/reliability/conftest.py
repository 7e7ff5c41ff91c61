from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import coverage
import pytest
from hypothesis import HealthCheck, settings
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.conftest import wsgi_request
from tests.reliability.collector import FaultyCollector
from tests.reliability.unavailable import unavailable

# The real-server fixture of the Flask integration tests, shared with the reliability
# tests (django_server comes from tests/django_rig.py, a plugin of tests/conftest.py).
from tests.test_flask_gunicorn import gunicorn  # noqa: F401

# Fuzz runs are deterministic and bounded: a fixed seed (derandomize), no example
# database, no per-example deadline (the machine is shared); the count is per test.
settings.register_profile(
    "obskit-fuzz",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@contextmanager
def coverage_paused() -> Iterator[None]:
    """Run a bulk loop (10,000+ iterations) without coverage's line tracer, which makes
    it several times slower; the first iterations and the other tests cover the code."""
    current = coverage.Coverage.current()
    if current is None:
        yield
        return
    current.stop()
    try:
        yield
    finally:
        current.start()


@pytest.fixture
def collector() -> Iterator[FaultyCollector]:
    faulty = FaultyCollector()
    yield faulty
    faulty.close()


@dataclass
class Reply:
    """One in-process request's response and the server span obskit finished for it."""

    status: int
    headers: dict[str, str]
    body: bytes
    span: ReadableSpan

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def trace_id(self) -> str:
        assert self.span.context is not None
        return format(self.span.context.trace_id, "032x")

    @property
    def parent_id(self) -> str | None:
        return None if self.span.parent is None else format(self.span.parent.span_id, "016x")


class Target:
    """The Flask or Django test app, called in-process as a WSGI server calls it."""

    def __init__(self, framework: str, settings: dict[str, Any]) -> None:
        self.framework = framework
        if framework == "flask":
            from tests.reliability.apps import create_flask_app

            self.app: Any = create_flask_app(**settings)  # the app factory calls init()
            self.context_path = "/context"
        else:
            from tests.django_setup import setup_django

            setup_django()
            from django.core.handlers.wsgi import WSGIHandler

            self.app = WSGIHandler()
            self.context_path = "/catalog/context"
        self.exporter = InMemorySpanExporter()
        self._capsys: Any = None

    def get(self, headers: Iterable[tuple[str, str]] = (), path: str | None = None) -> Reply:
        status, reply_headers, body = wsgi_request(self.app, path or self.context_path, headers)
        (span,) = [s for s in self.exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
        self.exporter.clear()
        return Reply(status, reply_headers, body, span)

    def lines(self) -> list[str]:
        """The stdout lines written since the last call."""
        out: str = self._capsys.readouterr().out
        return out.splitlines()


@pytest.fixture
def target(
    spans: Callable[..., InMemorySpanExporter], capsys: pytest.CaptureFixture[str]
) -> Callable[..., Target]:
    """init(**settings) then the named framework's app (``flask`` or ``django``)."""

    def make(framework: str, **settings: Any) -> Target:
        settings = {"service_name": f"{framework}-hostile", **settings}
        made = Target(framework, settings)
        made.exporter = spans(**settings)
        made._capsys = capsys
        capsys.readouterr()
        return made

    return make


@pytest.fixture(scope="session")
def gunicorn_release(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A directory holding gunicorn VERSION (``newest``: the newest release), installed with
    ``pip install --no-deps --target``; put first on PYTHONPATH it is the one that runs.
    Skips when pip cannot install it (fails under ``CI=true``)."""
    installed: dict[str, Path] = {}

    def get(version: str) -> Path:
        if version not in installed:
            target = tmp_path_factory.mktemp(f"gunicorn-{version}")
            spec = "gunicorn" if version == "newest" else f"gunicorn=={version}"
            pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target"]
            done = subprocess.run(
                [*pip, str(target), spec],
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            if done.returncode != 0:
                unavailable(f"could not install {spec}: {done.stderr[-500:]}")
            installed[version] = target
        return installed[version]

    return get
