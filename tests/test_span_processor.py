"""CountingBatchSpanProcessor: sampled spans are queued for export, queue-full drops are counted."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from obskit import _selfstats
from obskit._export import CountingBatchSpanProcessor


class _HeldExporter(SpanExporter):
    """Records each batch, then blocks until released (a collector that stopped answering)."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.batches.append([span.name for span in spans])
        self.release.wait(10)
        return SpanExportResult.SUCCESS


def _queue_full_drops() -> float:
    key = ("obskit_dropped", (("reason", "queue_full"), ("signal", "traces")))
    return _selfstats.snapshot().get(key, 0.0)


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
    before = _queue_full_drops()
    with caplog.at_level(logging.WARNING):
        for i in range(2):  # one batch: the worker takes it and blocks in export
            tracer.start_span(f"first{i}").end()
        deadline = time.monotonic() + 5
        while not exporter.batches and time.monotonic() < deadline:
            time.sleep(0.01)
        assert exporter.batches == [["first0", "first1"]]
        for i in range(10):  # 4 fit in the queue, 6 find it full
            tracer.start_span(f"s{i}").end()
    assert len(processor._batch_processor._queue) == 4  # type: ignore[attr-defined]
    assert _queue_full_drops() - before == 6
    assert "Queue full" in caplog.text  # upstream's own warning is kept


def test_unsampled_spans_are_neither_queued_nor_counted(
    held: tuple[TracerProvider, CountingBatchSpanProcessor, _HeldExporter],
) -> None:
    """Children of an unsampled parent never reach the queue, so they cannot count as drops."""
    provider, processor, _ = held
    tracer = provider.get_tracer("t")
    parent = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(0))
    context = set_span_in_context(NonRecordingSpan(parent))
    before = _queue_full_drops()
    for _ in range(10):
        tracer.start_span("child", context=context).end()
    assert len(processor._batch_processor._queue) == 0  # type: ignore[attr-defined]
    assert _queue_full_drops() == before
