"""docs/http-clients.md: its snippets run as written (the services they call stood in for
by a real server on 127.0.0.1), with the spans and headers the page describes."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.http_origin import Origin

PAGE = Path(__file__).resolve().parents[1] / "docs" / "http-clients.md"


def test_the_pages_snippets_make_the_spans_it_describes(
    origin: Origin, spans: Callable[..., InMemorySpanExporter]
) -> None:
    """The first example's POST carries traceparent; the traced background job's GET is a
    CLIENT span under the job's span."""
    pytest.importorskip("requests")
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 2
    first = blocks[0].replace("http://payments:8080/charges", f"{origin.url}/echo/charges")
    namespace: dict[str, object] = {"__name__": "__snippet__"}
    exec(compile(first, "http-clients.md-snippet", "exec"), namespace)
    ((path, headers),) = origin.received
    assert path == "/echo/charges"
    assert "traceparent" in headers
    exporter = spans(service_name="checkout")  # (the same settings, with a span sink)
    namespace["PRICE_FEEDS"] = [f"{origin.url}/echo/prices"]
    exec(compile(blocks[1], "http-clients.md-snippet", "exec"), namespace)
    namespace["refresh_prices"]()  # type: ignore[operator]
    client, job = exporter.get_finished_spans()
    assert (client.name, client.kind) == ("GET", SpanKind.CLIENT)
    assert job.name == "__snippet__.refresh_prices"
    assert client.parent is not None
    assert client.parent.span_id == job.context.span_id
    assert "traceparent" in origin.received[1][1]
