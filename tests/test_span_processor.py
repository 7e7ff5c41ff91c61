"""CountingBatchSpanProcessor: sampled spans are queued for export, queue-full drops are
counted, and while the collector is known down spans are dropped as they end (one kept)."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from obskit._lifecycle import self_stats as _self_stats
from obskit._traces.guarded_export import CountingBatchSpanProcessor, GuardedExporter


class _HeldExporter(SpanExporter):
    """Records each batch, then blocks until released (a collector that stopped answering)."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.batches.append([span.name for span in spans])
        self.release.wait(10)
        return SpanExportResult.SUCCESS


def _dropped(reason: str) -> float:
    return _self_stats.value("obskit_dropped", signal="traces", reason=reason)


@pytest.fixture
def held() -> Iterator[tuple[TracerProvider, CountingBatchSpanProcessor, _HeldExporter]]:
    exporter = _HeldExporter()
    processor = CountingBatchSpanProcessor(
        exporter, max_queue_size=4, max_export_batch_size=2, schedule_delay_millis=60_000
    )
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    yield provider, processor, exporter
    exporter.release.set()
    provider.shutdown()


def test_drops_beyond_the_queue_are_counted_once_each(
    held: tuple[TracerProvider, CountingBatchSpanProcessor, _HeldExporter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every sampled span that finds the queue full is counted as one queue_full drop."""
    provider, processor, exporter = held
    tracer = provider.get_tracer("t")
    before = _dropped("queue_full")
    with caplog.at_level(logging.WARNING):
        for i in range(2):  # one batch: the worker takes it and blocks in export
            tracer.start_span(f"first{i}").end()
        deadline = time.monotonic() + 5
        while not exporter.batches and time.monotonic() < deadline:
            time.sleep(0.01)
        assert exporter.batches == [["first0", "first1"]]
        for i in range(10):  # 4 fit in the queue, 6 find it full
            tracer.start_span(f"s{i}").end()
    assert processor.queued == 4
    assert _dropped("queue_full") - before == 6
    # upstream's own warning is kept ("Queue full, ..."; older SDKs: "Queue is full, ...")
    assert re.search(r"Queue (is )?full", caplog.text)


def test_unsampled_spans_are_neither_queued_nor_counted(
    held: tuple[TracerProvider, CountingBatchSpanProcessor, _HeldExporter],
) -> None:
    """Children of an unsampled parent never reach the queue, so they cannot count as drops."""
    provider, processor, _ = held
    tracer = provider.get_tracer("t")
    parent = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(0))
    context = set_span_in_context(NonRecordingSpan(parent))
    before = _dropped("queue_full")
    for _ in range(10):
        tracer.start_span("child", context=context).end()
    assert processor.queued == 0
    assert _dropped("queue_full") == before


class _SwitchExporter(SpanExporter):
    """Fails while ``failing`` is set (a collector that refuses), else records each batch."""

    def __init__(self) -> None:
        self.failing = True
        self.batches: list[list[str]] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.failing:
            return SpanExportResult.FAILURE
        self.batches.append([span.name for span in spans])
        return SpanExportResult.SUCCESS


class _SeenGuard(GuardedExporter):
    """obskit's guard, recording every batch the batch processor hands it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handed: list[list[str]] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.handed.append([span.name for span in spans])
        return super().export(spans)


def test_while_the_collector_is_down_only_one_span_stays_queued() -> None:
    """Once an export finds the collector's port refusing connections, ended spans are
    dropped and counted at once, but one kept queued, whose export probes the port again
    each interval; when the port accepts again, that span goes out and spans queue as
    before. A real listening socket plays the collector's port (closed = down)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # the collector is down: connections are refused
    inner = _SwitchExporter()
    guard = _SeenGuard(inner, ("127.0.0.1", port))
    processor = CountingBatchSpanProcessor(guard, schedule_delay_millis=60_000)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    try:
        for i in range(3):
            tracer.start_span(f"a{i}").end()
        processor.force_flush()  # the first failure: the exporter's own attempt
        assert not guard.down
        assert processor.queued == 0
        for i in range(3):  # not known down yet: queued as usual
            tracer.start_span(f"b{i}").end()
        assert processor.queued == 3
        processor.force_flush()  # failing, and the port refuses: known down
        assert guard.down
        before = _dropped("export_failed")
        for i in range(10):
            tracer.start_span(f"c{i}").end()
        assert processor.queued == 1
        assert _dropped("export_failed") - before == 9
        processor.force_flush()  # the kept span probes again: still down
        assert guard.handed[-1] == ["c0"]
        assert guard.down
        assert _dropped("export_failed") - before == 10
        tracer.start_span("d0").end()
        tracer.start_span("d1").end()
        with socket.create_server(("127.0.0.1", port)):  # the collector is back
            inner.failing = False
            processor.force_flush()
            assert not guard.down
            assert inner.batches == [["d0"]]
            for i in range(3):
                tracer.start_span(f"e{i}").end()
            processor.force_flush()
            assert inner.batches[-1] == ["e0", "e1", "e2"]
            assert _dropped("export_failed") - before == 11  # c1..c9, c0, d1
            # Failures while the port accepts (a 5xx, a timeout) never mean "down":
            # every batch is still attempted, every span still queued.
            inner.failing = True
            for round_ in range(2):
                for i in range(3):
                    tracer.start_span(f"f{round_}{i}").end()
                assert processor.queued == 3
                processor.force_flush()
                assert not guard.down
            assert _dropped("export_failed") - before == 17  # and f00..f12, as batches
    finally:
        provider.shutdown()
