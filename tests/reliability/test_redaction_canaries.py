"""Redaction canaries through the Flask and Django apps, called in process as a WSGI
server calls them: query values, captured Referer/Location headers and oversized baggage
never reach log lines, span attributes (InMemorySpanExporter), metrics or stderr.

The same canaries under real gunicorn servers: tests/reliability/test_pii_servers.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import redirect
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind
from prometheus_client.openmetrics.exposition import generate_latest

from obskit._metrics import registry as _registry
from tests.conftest import wsgi_request
from tests.reliability.canaries import (
    ALL,
    LEAKY_QUERY,
    REFERER,
    REFERER_PASSWORD,
    REFERER_TOKEN,
    baggage_requests,
)
from tests.reliability.conftest import Target

R = "[REDACTED]"
FRAMEWORKS = ["flask", "django"]
SETTINGS: dict[str, Any] = {
    "http_capture_request_headers": ["referer", "baggage", "x-team"],
    "http_capture_response_headers": ["location"],
    "http_query_allowlist": ["page"],
}
#: LEAKY_QUERY as recorded: names kept, only the allowlisted page's value.
REDACTED_QUERY = f"email={R}&otp={R}&a={R};token={R}&token={R}&page=2"


def _span_text(spans: tuple[ReadableSpan, ...]) -> str:
    return repr(
        [(s.name, dict(s.attributes or {}), s.status.description, s.events, s.links) for s in spans]
    )


def _metrics_text() -> str:
    return generate_latest(_registry.store().registry).decode()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_query_referer_and_baggage_canaries_never_leave_the_app(
    framework: str, target: Callable[..., Target], capsys: pytest.CaptureFixture[str]
) -> None:
    """?email=, ?otp=, ?a=1;token=, ?%74oken=, a Referer's token and credentials and PII
    in oversized or malformed baggage: in no log line, span attribute, metric or stderr;
    the query keeps its names and the allowlisted page's value."""
    app = target(framework, **SETTINGS)
    path = "/context" if framework == "flask" else "/catalog/context"
    headers = [("Referer", REFERER), ("X-Team", "payments")]
    status, _, _ = wsgi_request(app.app, path, headers, LEAKY_QUERY)
    assert status == 200
    for baggage in baggage_requests():
        assert wsgi_request(app.app, path, baggage)[0] == 200
    spans = app.exporter.get_finished_spans()
    servers = [s for s in spans if s.kind is SpanKind.SERVER]
    assert len(servers) == 4
    first = dict(servers[0].attributes or {})
    assert first["url.query"] == REDACTED_QUERY
    assert first["http.request.header.referer"] == (f"https://shop.example/cart?token={R}&page=3",)
    assert first["http.request.header.x-team"] == ("payments",)
    for span in servers[1:]:
        assert (span.attributes or {})["http.request.header.baggage"] == (R,)
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    # The SDK did warn about the baggage (so the test can fail), with the header text dropped.
    warnings = [line for line in lines if line["logger"] == "opentelemetry.baggage.propagation"]
    assert warnings
    assert all(f"`{R}`" in line["event"] for line in warnings)
    everything = captured.out + captured.err + _span_text(spans) + _metrics_text()
    assert [canary for canary in ALL if canary in everything] == []
    assert REFERER_TOKEN not in everything
    assert REFERER_PASSWORD not in everything


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_captured_location_header_keeps_no_query_value_or_credentials(
    framework: str, target: Callable[..., Target], capsys: pytest.CaptureFixture[str]
) -> None:
    """A redirect's Location (the app's own, or Django's APPEND_SLASH one that copies the
    request's query) is recorded without credentials and with only allowlisted values."""
    app = target(framework, **SETTINGS)
    if framework == "flask":
        app.app.add_url_rule(
            "/bounce",
            "bounce",
            lambda: redirect(f"https://bot:{REFERER_PASSWORD}@sso.example/next?{LEAKY_QUERY}"),
        )
        status, headers, _ = wsgi_request(app.app, "/bounce")
        expected = f"https://sso.example/next?{REDACTED_QUERY}"
    else:
        status, headers, _ = wsgi_request(app.app, "/catalog", query=LEAKY_QUERY)
        expected = f"/catalog/?{REDACTED_QUERY}"
    assert status in (301, 302)
    assert "canary" in headers["Location"]  # the app really sent the canaries
    (span,) = [s for s in app.exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert (span.attributes or {})["http.response.header.location"] == (expected,)
    captured = capsys.readouterr()
    everything = captured.out + captured.err + _span_text((span,)) + _metrics_text()
    assert [canary for canary in [*ALL, REFERER_PASSWORD] if canary in everything] == []
