"""Pieces of the hand-written floor the benchmarks compare obskit with: what a team
writes with OpenTelemetry and structlog directly (no obskit code), and the span sink
that every case with spans, obskit's and the floor's alike, hands them to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


def add_trace_ids(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """A structlog processor adding the current span's ``trace_id``/``span_id`` (hex)."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format(context.trace_id, "032x")
        event["span_id"] = format(context.span_id, "016x")
    return event


class DiscardingExporter(SpanExporter):
    """A span exporter that accepts every batch and drops it: a collector that costs nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def discard_spans(provider: TracerProvider) -> None:
    """Send ``provider``'s ended spans through a default ``BatchSpanProcessor`` to a
    :class:`DiscardingExporter`.

    Every benchmark case that makes spans gets exactly this, so each side pays what a
    real deployment pays to end a span (the ``ReadableSpan`` built for the processors,
    the batch queue) and nothing for the export itself. Without any processor the SDK
    still builds that ``ReadableSpan`` on every ``end()`` while obskit skips it, which
    would flatter obskit by work no deployment skips.
    """
    provider.add_span_processor(BatchSpanProcessor(DiscardingExporter()))
