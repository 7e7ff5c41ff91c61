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

from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import self_stats as _self_stats
from obskit._traces.export_reasons import ReasonRecorder


class GuardedExporter(SpanExporter):
    """Delegates to ``exporter``; never raises, shuts the delegate down exactly once.

    While exports are failing and ``endpoint`` (host, port) refuses TCP connections —
    the collector is down — a batch is dropped (and counted) without being encoded
    and sent, so an outage does not cost the app CPU; :attr:`down` is then true, and
    :class:`CountingBatchSpanProcessor` stops queueing spans but one. The first batch
    after the port accepts connections again is exported normally.

    A failed batch is counted in ``obskit_export_errors_total`` with the ``reason``
    ``reasons`` recorded for the exporter's last attempt (an HTTP status, a timeout,
    a reset, a gRPC status code: see :mod:`obskit._traces.export_reasons`), else ``"failure"``.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        endpoint: tuple[str, int] | None = None,
        reasons: ReasonRecorder | None = None,
    ) -> None:
        self.exporter = exporter
        self._endpoint = endpoint
        self._reasons = reasons
        self._failing = False
        #: True from a batch dropped because the endpoint refused connections until
        #: the next batch that is sent: the collector is known to be down.
        self.down = False
        self._lock = threading.Lock()
        self._closed = False

    def _unreachable(self) -> bool:
        if not self._failing or self._endpoint is None:
            return False
        try:
            with socket.create_connection(self._endpoint, timeout=0.25):
                return False
        except TimeoutError:
            # No proof the collector is down (a busy host's full accept backlog, a slow
            # network): the export, bounded by its own timeout, decides.
            return False
        except OSError:  # refused, no route, no such host
            return True

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            _self_stats.add("obskit_dropped", len(spans), signal="traces", reason="shutdown")
            return SpanExportResult.FAILURE
        if self._unreachable():
            self.down = True
            _self_stats.add("obskit_export_errors", signal="traces", reason="unreachable")
            _self_stats.add("obskit_dropped", len(spans), signal="traces", reason="export_failed")
            return SpanExportResult.FAILURE
        self.down = False
        if self._reasons is not None:
            self._reasons.clear()
        try:
            result = self.exporter.export(spans)
        except Exception as error:
            self._failing = True
            reason = self._reasons.reason() if self._reasons is not None else None
            _self_stats.add("obskit_export_errors", signal="traces", reason=reason or "exception")
            _self_stats.add("obskit_dropped", len(spans), signal="traces", reason="export_failed")
            _internal_errors.report("export", error)
            return SpanExportResult.FAILURE
        self._failing = result is not SpanExportResult.SUCCESS
        if result is SpanExportResult.SUCCESS:
            _self_stats.add("obskit_spans_exported", len(spans))
        else:
            reason = self._reasons.reason() if self._reasons is not None else None
            _self_stats.add("obskit_export_errors", signal="traces", reason=reason or "failure")
            _self_stats.add("obskit_dropped", len(spans), signal="traces", reason="export_failed")
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
            _internal_errors.report("export", error)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return self.exporter.force_flush(timeout_millis)
        except Exception as error:
            _internal_errors.report("export", error)
            return False


#: The names ``BatchSpanProcessor.on_end`` uses when it is "if sampled, emit":
#: the version :meth:`CountingBatchSpanProcessor.on_end` folds into one pass.
_ON_END_NAMES = ("context", "trace_flags", "sampled", "_batch_processor", "emit")


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor, counting spans it drops because its queue is full.

    Upstream drops the oldest queued span and logs a (deduplicated) warning; obskit
    also counts each drop as ``obskit_dropped_total{signal="traces",reason="queue_full"}``.

    While its :class:`GuardedExporter` knows the collector is down (:attr:`~GuardedExporter.down`),
    a span that ends is queued only if the queue is empty: that one span's export probes
    the endpoint again each interval. The others are dropped and counted at once
    (``reason="export_failed"``, as their batch would be) instead of being held until
    the export drops them: an outage keeps no spans alive in the app, so they cost it
    neither memory nor garbage-collector work.
    """

    def __init__(self, span_exporter: SpanExporter, *args: Any, **kwargs: Any) -> None:
        super().__init__(span_exporter, *args, **kwargs)
        self._guard = span_exporter if isinstance(span_exporter, GuardedExporter) else None
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
        guard = self._guard
        if guard is not None and guard.down and batch._queue:
            _self_stats.add("obskit_dropped", signal="traces", reason="export_failed")
            return
        if len(batch._queue) >= batch._max_queue_size:
            _self_stats.add("obskit_dropped", signal="traces", reason="queue_full")
        batch.emit(span)

    def _on_end_generic(self, span: ReadableSpan) -> None:
        context = span.context
        if context is not None and context.trace_flags.sampled:
            batch = getattr(self, "_batch_processor", None)
            queue = getattr(batch, "_queue", None)
            if self._guard is not None and self._guard.down and queue:
                _self_stats.add("obskit_dropped", signal="traces", reason="export_failed")
                return
            limit = getattr(batch, "_max_queue_size", None)
            if queue is not None and limit is not None and len(queue) >= limit:
                _self_stats.add("obskit_dropped", signal="traces", reason="queue_full")
        super().on_end(span)
