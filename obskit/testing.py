"""Testing toolkit: prove in your own tests that your telemetry is right.

``obskit.testing.capture()`` initialises obskit for a test — in-memory span export,
sequential trace and span ids, log lines captured instead of written, strict mode —
and yields a ``Capture`` to assert on:

    with obskit.testing.capture() as telemetry:
        client.post("/checkout")
    checkout = telemetry.span("POST /checkout")
    assert telemetry.children(checkout)[0].name == "shop.payments.charge"
    assert telemetry.logs[-1]["trace_id"] == telemetry.trace_id(checkout)
    assert telemetry.metrics.increase("http_server_request_duration_seconds_count",
                                      http_route="/checkout") == 1

The pytest plugin (installed with obskit) offers the same as the ``obskit_capture``
fixture.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator

from obskit._lifecycle import runtime as _runtime
from obskit._version import __version__

__all__ = ["Capture", "CapturedMetrics", "capture"]


class SequentialIds(IdGenerator):
    """Trace ids 1, 2, 3, ... and span ids 1, 2, 3, ...: stable across test runs."""

    def __init__(self) -> None:
        self._traces = itertools.count(1)
        self._spans = itertools.count(1)

    def generate_trace_id(self) -> int:
        return next(self._traces)

    def generate_span_id(self) -> int:
        return next(self._spans)


Key = tuple[str, tuple[tuple[str, str], ...]]


class CapturedMetrics:
    """obskit's metrics as a scrape would see them, with lookup helpers."""

    def __init__(self) -> None:
        self._baseline = self._samples()

    @staticmethod
    def text() -> str:
        """The OpenMetrics exposition (what Prometheus scrapes)."""
        from prometheus_client.openmetrics import exposition

        from obskit._metrics.registry import store

        generate: Any = exposition.generate_latest  # untyped upstream
        return str(generate(store().exposition()).decode())

    def _parsed(self) -> list[Any]:
        from prometheus_client.openmetrics import parser

        families: Any = parser.text_string_to_metric_families(self.text())  # type: ignore[no-untyped-call]
        return [s for family in families for s in family.samples]

    def _samples(self) -> dict[Key, float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in self._parsed()}

    @staticmethod
    def _matches(key: Key, name: str, labels: dict[str, str]) -> bool:
        sample_labels = dict(key[1])
        return key[0] == name and all(sample_labels.get(k) == v for k, v in labels.items())

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples named ``name`` (e.g. ``orders_total``) with these labels."""
        return sum(v for k, v in self._samples().items() if self._matches(k, name, labels))

    def increase(self, name: str, **labels: str) -> float:
        """How much ``value()`` grew since the capture began."""
        before = sum(v for k, v in self._baseline.items() if self._matches(k, name, labels))
        return self.value(name, **labels) - before

    def exemplars(self, name: str, **labels: str) -> list[dict[str, str]]:
        """Exemplar labels (``trace_id``, ``span_id``) on samples named ``name``."""
        return [
            dict(s.exemplar.labels)
            for s in self._parsed()
            if s.exemplar is not None
            and self._matches((s.name, tuple(sorted(s.labels.items()))), name, labels)
        ]


class Capture:
    """What obskit recorded during a ``capture()`` block."""

    def __init__(self, exporter: InMemorySpanExporter, lines: list[str]) -> None:
        self._exporter = exporter
        self._lines = lines
        self.metrics = CapturedMetrics()

    @property
    def spans(self) -> list[ReadableSpan]:
        """Finished spans, in the order they ended."""
        return list(self._exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        """The one finished span named ``name`` (AssertionError if none or several)."""
        found = [span for span in self.spans if span.name == name]
        names = sorted({span.name for span in self.spans})
        assert len(found) == 1, f"expected one span {name!r}, found {len(found)}; spans: {names}"
        return found[0]

    def children(self, span: ReadableSpan) -> list[ReadableSpan]:
        """The finished direct children of ``span``, in start order."""
        assert span.context is not None
        kids = [
            s
            for s in self.spans
            if s.parent is not None and s.parent.span_id == span.context.span_id
        ]
        return sorted(kids, key=lambda s: s.start_time or 0)

    @staticmethod
    def trace_id(span: ReadableSpan) -> str:
        """``span``'s trace id as the 32 hex digits log lines and exemplars carry."""
        assert span.context is not None
        return format(span.context.trace_id, "032x")

    @property
    def logs(self) -> list[dict[str, Any]]:
        """Every log line written so far, rendered as JSON and parsed back."""
        return [json.loads(line) for line in self._lines]

    def clear(self) -> None:
        """Forget the spans and log lines recorded so far."""
        self._exporter.clear()
        self._lines.clear()


@contextmanager
def capture(sequential_ids: bool = True, **settings: Any) -> Iterator[Capture]:
    """Initialise obskit for a test and yield what it records; shut it down afterwards.

    ``settings`` are ``obskit.init()`` settings; by default: no exporter, no ``/metrics``
    port, JSON logs at DEBUG, strict mode (obskit's own internal errors raise, failing
    the test).
    ``sequential_ids`` makes trace and span ids 1, 2, 3, ... and log timestamps
    ``2000-01-01T00:00:00.000001Z``, ``.000002Z``, ... (stable test output; span
    timestamps stay real, so durations mean something).
    """
    from obskit._logs import pipeline as _pipeline

    options: dict[str, Any] = {
        "service_name": "test",
        "traces_exporter": "none",
        "log_format": "json",
        "log_level": "debug",
        "strict": True,
        "metrics_port": 0,
        **settings,
    }
    handle = _runtime.init(**options)
    provider = handle.tracer_provider
    assert provider is not None, "obskit is disabled (OTEL_SDK_DISABLED): nothing to capture"
    if sequential_ids:
        provider.id_generator = SequentialIds()  # type: ignore[assignment]
        # A new scope name: the SDK caches tracers (and their id generator) per scope.
        handle.tracer = provider.get_tracer("obskit.testing", __version__)
    exporter = InMemorySpanExporter()
    from obskit._traces.pipeline import with_hot_frames

    # (with profiles on, slow spans reach it with their hot frames, as an exporter's do)
    provider.add_span_processor(with_hot_frames(SimpleSpanProcessor(exporter), handle.settings))
    shared = _pipeline.pipeline()
    if sequential_ids:
        ticks = itertools.count(1)
        shared.use_clock(lambda: f"2000-01-01T00:00:00.{next(ticks):06d}Z")
    writer = shared.writer
    lines: list[str] = []
    writer.capture = lines
    try:
        yield Capture(exporter, lines)
    finally:
        writer.capture = None
        _runtime.shutdown()
