"""The width-aware waterfall (obskit._traces.waterfall): the console exporter's layout
without a width, and every row within the width when one is given."""

from __future__ import annotations

from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from obskit._traces.waterfall import render
from obskit.testing import SequentialIds

MS = 1_000_000
T0 = 1_700_000_000_000_000_000
GOLDEN = Path(__file__).parent / "golden" / "console_tree.txt"


def _golden_spans(
    root_name: str = "GET /checkout", error: str = "PaymentError: card declined"
) -> list[ReadableSpan]:
    """The spans of tests/golden/console_tree.txt."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(id_generator=SequentialIds())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("golden")
    root = tracer.start_span(root_name, start_time=T0)
    context = trace.set_span_in_context(root)
    cart = tracer.start_span("shop.load_cart", context=context, start_time=T0 + 10 * MS)
    query = tracer.start_span(
        "SELECT carts", context=trace.set_span_in_context(cart), start_time=T0 + 15 * MS
    )
    query.end(end_time=T0 + 20 * MS)
    cart.end(end_time=T0 + 30 * MS)
    charge = tracer.start_span("shop.charge", context=context, start_time=T0 + 40 * MS)
    charge.set_status(Status(StatusCode.ERROR, error))
    charge.end(end_time=T0 + 90 * MS)
    root.end(end_time=T0 + 100 * MS)
    return list(exporter.get_finished_spans())


def test_without_a_width_it_is_the_console_exporters_tree() -> None:
    """No width: the same text as the console exporter's golden tree."""
    assert render(_golden_spans()) == GOLDEN.read_text(encoding="utf-8")


def test_with_a_width_every_row_fits() -> None:
    """At 60, 80 and 120 columns every row fits (at 60 the header takes two), names are
    whole when they can be, and the bars start at one column."""
    for width in (60, 80, 120):
        lines = render(_golden_spans(), width=width).splitlines()
        assert all(len(line) <= width for line in lines), (width, lines)
        rows = [line for line in lines if "|" in line]
        assert rows[0].startswith("GET /checkout ")
        assert rows[2].startswith("    SELECT carts ")
        assert len({line.index("|") for line in rows}) == 1


def test_a_long_name_is_cut_and_a_long_error_goes_below() -> None:
    """A name longer than the room is cut with …; an error description that does not
    fit after the bar is written on a row of its own under the span."""
    spans = _golden_spans(root_name="GET /" + "x" * 100, error="E" * 200)
    lines = render(spans, width=80).splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert lines[1].split(" ")[1].endswith("…")
    charge = next(i for i, line in enumerate(lines) if line.startswith("  shop.charge "))
    assert "✗" not in lines[charge]
    assert lines[charge + 1].startswith("    ✗ EEE")


def test_highlight_and_colours() -> None:
    """The trace id is dressed by ``highlight``; bars are coloured only when asked."""
    text = render(_golden_spans(), width=80, highlight=lambda tid: f"<{tid}>")
    assert text.startswith("trace <00000000000000000000000000000001>  100.0 ms  4 spans")
    assert "\x1b[" not in text
    assert "\x1b[36m" in render(_golden_spans(), colors=True, width=80)


def test_a_trace_across_services_names_each_rows_service() -> None:
    """Spans of one trace from two services (as in a test running both): each row says
    its service, escaped; a one-service trace's rows do not."""
    from opentelemetry.sdk.resources import Resource

    exporter = InMemorySpanExporter()
    tracers = {}
    for service in ("shop", "pay\x1b[31m"):
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracers[service] = provider.get_tracer("services")
    root = tracers["shop"].start_span("GET /checkout", start_time=T0)
    call = tracers["shop"].start_span(
        "POST", context=trace.set_span_in_context(root), start_time=T0 + 5 * MS
    )
    served = tracers["pay\x1b[31m"].start_span(
        "POST /pay", context=trace.set_span_in_context(call), start_time=T0 + 6 * MS
    )
    served.end(end_time=T0 + 20 * MS)
    call.end(end_time=T0 + 21 * MS)
    root.end(end_time=T0 + 30 * MS)
    rows = render(exporter.get_finished_spans(), width=100).splitlines()[1:]
    assert [
        row.split("  ")[0] if not row.startswith(" ") else row.strip().split("  ")[0]
        for row in rows
    ] == ["GET /checkout (shop)", "POST (shop)", "POST /pay (pay\\x1b[31m)"]
    single = render(_golden_spans(), width=100)
    assert "(" not in single.split("\n", 1)[1].split("|")[0]


def test_spans_that_repeat_ids_render_once_each() -> None:
    """Two providers counting ids from 1 (ids that collide): every span is one row, no
    endless recursion."""
    exporter = InMemorySpanExporter()
    tracers = []
    for _ in range(2):
        provider = TracerProvider(id_generator=SequentialIds())
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracers.append(provider.get_tracer("collide"))
    for tracer in tracers:
        root = tracer.start_span("root", start_time=T0)
        child = tracer.start_span(
            "child", context=trace.set_span_in_context(root), start_time=T0 + MS
        )
        child.end(end_time=T0 + 2 * MS)
        root.end(end_time=T0 + 3 * MS)
    rows = render(exporter.get_finished_spans(), width=80).splitlines()[1:]
    assert len(rows) == 4
