"""What every database test checks of a recorded call: its CLIENT spans, the duration
histogram and its exemplars, and that a canary value reached no signal."""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from obskit.testing import Capture

HISTOGRAM = "db_client_operation_duration_seconds"
#: A value the tests write into SQL literals and parameters: it must reach no signal.
CANARY = "canary-5f3e1d"


def client_spans(telemetry: Capture) -> list[ReadableSpan]:
    """The CLIENT spans recorded so far, in the order they ended."""
    return [span for span in telemetry.spans if span.kind is SpanKind.CLIENT]


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def is_child_of(span: ReadableSpan, parent: ReadableSpan) -> bool:
    assert parent.context is not None
    return span.parent is not None and span.parent.span_id == parent.context.span_id


def calls(telemetry: Capture, system: str, operation: str) -> float:
    """How many calls the histogram counted for these labels since the capture began."""
    return telemetry.metrics.increase(
        f"{HISTOGRAM}_count", db_system_name=system, db_operation_name=operation
    )


def exemplar_trace_ids(telemetry: Capture, system: str, operation: str) -> set[str]:
    """The trace ids of the histogram's exemplars for these labels."""
    found = telemetry.metrics.exemplars(
        f"{HISTOGRAM}_bucket", db_system_name=system, db_operation_name=operation
    )
    return {exemplar["trace_id"] for exemplar in found}


def everything(telemetry: Capture) -> str:
    """Every span (names, attributes, events), log line and metric as one text."""
    spans = [
        {
            "name": span.name,
            "attributes": attributes(span),
            "events": [(event.name, dict(event.attributes or {})) for event in span.events],
            "status": span.status.description,
        }
        for span in telemetry.spans
    ]
    return json.dumps(spans) + json.dumps(telemetry.logs) + telemetry.metrics.text()
