"""The span exporter wrapper: export errors contained, shutdown idempotent and abortable.

Upstream exporters may raise, log a warning on a second ``shutdown()``, and keep
retrying after the caller has given up. :class:`GuardedExporter` sits between the
batch processor and the real exporter so that none of this reaches the app, and
so that ``obskit.shutdown()`` can cut retries short when its deadline passes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from obskit import _safety


class GuardedExporter(SpanExporter):
    """Delegates to ``exporter``; never raises, shuts the delegate down exactly once."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter
        self._lock = threading.Lock()
        self._closed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        try:
            return self.exporter.export(spans)
        except Exception as error:
            _safety.report("export", error)
            return SpanExportResult.FAILURE

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
