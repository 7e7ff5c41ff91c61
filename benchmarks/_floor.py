"""Pieces of the hand-written floor the benchmarks compare obskit with: what a team
writes with OpenTelemetry and structlog directly (no obskit code)."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace


def add_trace_ids(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """A structlog processor adding the current span's ``trace_id``/``span_id`` (hex)."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format(context.trace_id, "032x")
        event["span_id"] = format(context.span_id, "016x")
    return event
