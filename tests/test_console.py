"""The console exporter's waterfall tree, checked against golden text."""

from __future__ import annotations

import io
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from obskit._traces.console_tree import ConsoleTreeExporter
from obskit.testing import SequentialIds

MS = 1_000_000  # nanoseconds
T0 = 1_700_000_000_000_000_000

GOLDEN = Path(__file__).parent / "golden" / "console_tree.txt"


def test_three_level_trace_with_an_error_renders_as_the_golden_tree() -> None:
    """Indentation by depth, offsets and durations in ms, bars on one time axis, the
    error marked with its description; printed once, when the root ends."""
    out = io.StringIO()
    provider = TracerProvider(id_generator=SequentialIds())
    provider.add_span_processor(SimpleSpanProcessor(ConsoleTreeExporter(out)))
    tracer = provider.get_tracer("golden")
    root = tracer.start_span("GET /checkout", start_time=T0)
    context = _in(root)
    cart = tracer.start_span("shop.load_cart", context=context, start_time=T0 + 10 * MS)
    query = tracer.start_span("SELECT carts", context=_in(cart), start_time=T0 + 15 * MS)
    query.end(end_time=T0 + 20 * MS)
    cart.end(end_time=T0 + 30 * MS)
    charge = tracer.start_span("shop.charge", context=context, start_time=T0 + 40 * MS)
    charge.set_status(Status(StatusCode.ERROR, "PaymentError: card declined"))
    charge.end(end_time=T0 + 90 * MS)
    assert out.getvalue() == ""  # the root has not ended yet
    root.end(end_time=T0 + 100 * MS)
    assert out.getvalue() == GOLDEN.read_text(encoding="utf-8")


def _in(span):  # type: ignore[no-untyped-def]
    from opentelemetry import trace

    return trace.set_span_in_context(span)
