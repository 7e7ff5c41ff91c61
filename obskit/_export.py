"""The span exporter wrapper: export errors contained, shutdown idempotent and abortable.

Upstream exporters may raise, log a warning on a second ``shutdown()``, and keep
retrying after the caller has given up. :class:`GuardedExporter` sits between the
batch processor and the real exporter so that none of this reaches the app, and
so that ``obskit.shutdown()`` can cut retries short when its deadline passes.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from obskit import _safety, _selfstats


class GuardedExporter(SpanExporter):
    """Delegates to ``exporter``; never raises, shuts the delegate down exactly once.

    While exports are failing and ``endpoint`` (host, port) refuses TCP connections —
    the collector is down — a batch is dropped (and counted) without being encoded
    and sent, so an outage does not cost the app CPU. The first batch after the port
    accepts connections again is exported normally.
    """

    def __init__(self, exporter: SpanExporter, endpoint: tuple[str, int] | None = None) -> None:
        self.exporter = exporter
        self._endpoint = endpoint
        self._failing = False
        self._lock = threading.Lock()
        self._closed = False

    def _unreachable(self) -> bool:
        if not self._failing or self._endpoint is None:
            return False
        try:
            with socket.create_connection(self._endpoint, timeout=0.25):
                return False
        except OSError:
            return True

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            _selfstats.add("obskit_dropped", len(spans), signal="traces", reason="shutdown")
            return SpanExportResult.FAILURE
        if self._unreachable():
            _selfstats.add("obskit_export_errors", signal="traces", reason="unreachable")
            _selfstats.add("obskit_dropped", len(spans), signal="traces", reason="export_failed")
            return SpanExportResult.FAILURE
        try:
            result = self.exporter.export(spans)
        except Exception as error:
            self._failing = True
            _selfstats.add("obskit_export_errors", signal="traces", reason="exception")
            _selfstats.add("obskit_dropped", len(spans), signal="traces", reason="export_failed")
            _safety.report("export", error)
            return SpanExportResult.FAILURE
        self._failing = result is not SpanExportResult.SUCCESS
        if result is SpanExportResult.SUCCESS:
            _selfstats.add("obskit_spans_exported", len(spans))
        else:
            _selfstats.add("obskit_export_errors", signal="traces", reason="failure")
            _selfstats.add("obskit_dropped", len(spans), signal="traces", reason="export_failed")
        return result

    def shutdown(self) -> None:
        """Shut the delegate down (first call only); also interrupts its retry back-off."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.exporter.shutdown()
        except Exception as error:
            _safety.report("export", error)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return self.exporter.force_flush(timeout_millis)
        except Exception as error:
            _safety.report("export", error)
            return False


#: The names ``BatchSpanProcessor.on_end`` uses when it is "if sampled, emit":
#: the version :meth:`CountingBatchSpanProcessor.on_end` folds into one pass.
_ON_END_NAMES = ("context", "trace_flags", "sampled", "_batch_processor", "emit")


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor, counting spans it drops because its queue is full.

    Upstream drops the oldest queued span and logs a (deduplicated) warning; obskit
    also counts each drop as ``obskit_dropped_total{signal="traces",reason="queue_full"}``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        batch = getattr(self, "_batch_processor", None)
        known = BatchSpanProcessor.on_end.__code__.co_names == _ON_END_NAMES and all(
            hasattr(batch, name) for name in ("_queue", "_max_queue_size", "emit")
        )
        #: The SDK's queue owner, when its on_end is the one folded in below.
        self._obskit_batch = batch if known else None

    def on_end(self, span: ReadableSpan) -> None:
        batch = self._obskit_batch
        if batch is None:  # an SDK this does not know: count defensively, then delegate
            self._on_end_generic(span)
            return
        context = span.context
        if not (context and context.trace_flags.sampled):
            return
        if len(batch._queue) >= batch._max_queue_size:
            _selfstats.add("obskit_dropped", signal="traces", reason="queue_full")
        batch.emit(span)

    def _on_end_generic(self, span: ReadableSpan) -> None:
        context = span.context
        if context is not None and context.trace_flags.sampled:
            batch = getattr(self, "_batch_processor", None)
            queue = getattr(batch, "_queue", None)
            limit = getattr(batch, "_max_queue_size", None)
            if queue is not None and limit is not None and len(queue) >= limit:
                _selfstats.add("obskit_dropped", signal="traces", reason="queue_full")
        super().on_end(span)
