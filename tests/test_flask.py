"""Flask integration with Flask's test client: spans, RED metrics, access log, privacy."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import obskit
from examples.flask_app import create_app
from obskit._http import server_request as _server_request
from tests.conftest import openmetrics
from tests.test_flask_versions import REDIRECT

DURATION = "http_server_request_duration_seconds"


class Harness:
    """The example app, its test client and what obskit recorded."""

    def __init__(self, app: Flask, exporter: InMemorySpanExporter, capsys: Any) -> None:
        self.app = app
        self.client: FlaskClient = app.test_client()
        self.exporter = exporter
        self._capsys = capsys

    def get(self, path: str, **kwargs: Any) -> Any:
        # buffered: read the body and close it, as a WSGI server does.
        return self.client.get(path, buffered=True, **kwargs)

    def open(self, path: str, method: str, **kwargs: Any) -> Any:
        return self.client.open(path, method=method, buffered=True, **kwargs)

    def server_spans(self) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.kind is SpanKind.SERVER]

    def server_span(self) -> ReadableSpan:
        (span,) = self.server_spans()
        return span

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._capsys.readouterr().out.splitlines()]


@pytest.fixture
def harness(
    spans: Callable[..., InMemorySpanExporter], capsys: pytest.CaptureFixture[str]
) -> Callable[..., Harness]:
    def make(**settings: Any) -> Harness:
        app = create_app(**settings)
        exporter = spans(**{"service_name": "flask-example", **settings})
        capsys.readouterr()
        return Harness(app, exporter, capsys)

    return make


def _hex(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def _duration_samples() -> list[Any]:
    family = openmetrics().get(DURATION)
    return [] if family is None else family.samples


def test_matched_route_span_metrics_logs_and_children(harness: Callable[..., Harness]) -> None:
    """A matched request: SERVER span "GET /post/<int:post_id>" with the semantic-convention
    attributes, a child @traced span, a histogram observation with its exemplar, and
    log lines (view, traced function, access) that all carry the request's ids."""
    h = harness()
    response = h.get("/post/7?x=1", headers={"User-Agent": "pytest-agent"})
    assert response.status_code == 200
    assert response.get_json() == {"id": 7, "title": "Post 7"}
    server = h.server_span()
    assert server.name == "GET /post/<int:post_id>"
    attributes = dict(server.attributes or {})
    assert attributes == {
        "http.request.method": "GET",
        "url.path": "/post/7",
        "url.scheme": "http",
        "url.query": "x=[REDACTED]",  # values redacted unless allowlisted
        "server.address": "localhost",
        "server.port": 80,
        "user_agent.original": "pytest-agent",
        "network.protocol.version": "1.1",
        "http.route": "/post/<int:post_id>",
        "http.response.status_code": 200,
    }
    assert server.status.status_code is StatusCode.UNSET
    assert server.parent is None  # no traceparent: the shared empty parent context...
    assert _server_request._NOTHING == {}  # ...which the request left empty
    child = next(s for s in h.exporter.get_finished_spans() if s.name.endswith("load_post"))
    assert child.parent is not None
    assert server.context is not None
    assert child.parent.span_id == server.context.span_id
    trace_id, span_id = _hex(server)
    lines = h.lines()
    assert [line["event"] for line in lines] == ["showing post", "loading post", "GET /post/7 200"]
    assert all(line["trace_id"] == trace_id for line in lines)
    access = lines[-1]
    assert access["logger"] == "obskit.access"
    assert access["span_id"] == span_id
    assert access["http.route"] == "/post/<int:post_id>"
    assert access["url.path"] == "/post/7"
    assert access["http.response.status_code"] == 200
    assert access["duration_ms"] > 0
    assert "client.address" not in access
    (count,) = [
        s
        for s in _duration_samples()
        if s.name == f"{DURATION}_count" and s.labels["http_route"] == "/post/<int:post_id>"
    ]
    assert count.labels == {
        "http_request_method": "GET",
        "http_route": "/post/<int:post_id>",
        "http_response_status_code": "200",
    }
    assert count.value == 1
    exemplars = [s.exemplar for s in _duration_samples() if s.exemplar is not None]
    assert [e.labels["trace_id"] for e in exemplars] == [trace_id]
    assert response.headers["traceresponse"] == f"00-{trace_id}-{span_id}-01"


def test_unmatched_paths_share_one_series_and_have_no_route(
    harness: Callable[..., Harness],
) -> None:
    """404 scans: span named just "GET", no http.route, one <unmatched> series."""
    h = harness()
    for _ in range(50):
        assert h.get(f"/wp-admin/{random.getrandbits(64):x}.php").status_code == 404
    spans = h.server_spans()
    assert {s.name for s in spans} == {"GET"}
    assert all("http.route" not in (s.attributes or {}) for s in spans)
    routes = {s.labels["http_route"] for s in _duration_samples() if s.name.endswith("_count")}
    assert routes == {"<unmatched>"}


def test_raised_exception_is_recorded_and_the_500_response_unchanged(
    harness: Callable[..., Harness],
) -> None:
    """An exception in the view: status ERROR with the exception's text, one exception
    event; Flask's own 500 page."""
    plain = Flask(__name__)

    @plain.get("/fail")
    def fail() -> str:
        raise RuntimeError("the example failure")

    expected = plain.test_client().get("/fail")
    h = harness()
    response = h.get("/fail")
    assert response.status_code == 500
    assert response.data == expected.data
    span = h.server_span()
    assert span.name == "GET /fail"
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "RuntimeError: the example failure"
    assert [event.name for event in span.events] == ["exception"]
    assert (span.attributes or {})["http.response.status_code"] == 500
    lines = h.lines()
    assert lines[-1]["http.response.status_code"] == 500
    error_line = next(line for line in lines if line["level"] == "error")
    assert error_line["exception.type"] == "RuntimeError"
    assert error_line["trace_id"] == _hex(span)[0]


def test_returned_5xx_is_an_error_without_exception_and_4xx_is_not(
    harness: Callable[..., Harness],
) -> None:
    """A 503 returned by the view marks the span ERROR; an abort(404) does not."""
    h = harness()
    assert h.get("/unavailable").status_code == 503
    assert h.get("/missing").status_code == 404
    spans = {s.name: s for s in h.server_spans()}
    assert spans["GET /unavailable"].status.status_code is StatusCode.ERROR
    assert spans["GET /unavailable"].events == ()
    assert spans["GET /missing"].status.status_code is StatusCode.UNSET


def test_redirect_head_options_and_other_methods(harness: Callable[..., Harness]) -> None:
    """A redirect (302; 303 from Flask 3.2) keeps its route; HEAD and OPTIONS are recorded
    as such; PURGE becomes _OTHER in attributes and labels, and its span is named
    HTTP (the semantic conventions' name for a method they do not know)."""
    h = harness()
    assert h.get("/go").status_code == REDIRECT
    assert h.open("/post/1", "HEAD").status_code == 200
    assert h.open("/post/1", "OPTIONS").status_code == 200
    assert h.open("/post/1", "PURGE").status_code == 405
    spans = h.server_spans()
    names = [s.name for s in spans]
    assert names[:3] == ["GET /go", "HEAD /post/<int:post_id>", "OPTIONS /post/<int:post_id>"]
    other = spans[3]
    assert other.name == "HTTP"  # (Flask names no route for a 405)
    assert (other.attributes or {})["http.request.method"] == "_OTHER"
    assert (other.attributes or {})["http.request.method_original"] == "PURGE"
    methods = {s.labels["http_request_method"] for s in _duration_samples()}
    assert methods == {"GET", "HEAD", "OPTIONS", "_OTHER"}


def test_streaming_response_is_timed_to_its_last_chunk(harness: Callable[..., Harness]) -> None:
    """stream_with_context: the span ends after the last chunk; chunk logs carry the ids;
    nothing stays attached afterwards."""
    h = harness()
    started = time.perf_counter()
    response = h.get("/stream?chunks=4&pause=0.05")
    assert response.data == b"chunk 0\nchunk 1\nchunk 2\nchunk 3\n"
    span = h.server_span()
    assert span.end_time is not None
    assert span.start_time is not None
    assert (span.end_time - span.start_time) / 1e9 >= 0.19
    assert time.perf_counter() - started >= 0.19
    lines = h.lines()
    chunks = [line for line in lines if line["event"] == "streaming chunk"]
    assert len(chunks) == 4
    assert {line["trace_id"] for line in lines} == {_hex(span)[0]}
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_client_disconnect_mid_stream_ends_the_request(harness: Callable[..., Harness]) -> None:
    """A client that stops reading: the server closes the body, the span ends cleanly."""
    h = harness()
    response = h.client.get("/stream?chunks=100&pause=0", buffered=False)
    body = iter(response.response)
    assert next(body) == b"chunk 0\n"
    response.close()  # what a WSGI server does when the client goes away
    span = h.server_span()
    assert span.name == "GET /stream"
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_incoming_traceparent_continues_the_callers_trace(harness: Callable[..., Harness]) -> None:
    """The server span's parent is the incoming span; trace id, and baggage, are kept."""
    h = harness()
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    h.get("/", headers={"traceparent": incoming, "tracestate": "vendor=1"})
    span = h.server_span()
    assert span.parent is not None
    assert span.parent.span_id == 0xB7AD6B7169203331
    assert span.parent.is_remote
    assert _hex(span)[0] == "0af7651916cd43dd8448eb211c80319c"
    assert span.context is not None
    assert span.context.trace_state.get("vendor") == "1"


BAD_TRACEPARENTS = [
    "",
    "garbage",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",  # no flags
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
    "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero span id
    "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",  # uppercase
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # version ff
    "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",  # short trace id
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-zz",  # bad flags
    "00-xyz7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # not hex
    "00-" + "a" * 8000,  # oversized
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",  # v00 with extra
]


@pytest.mark.parametrize("header", BAD_TRACEPARENTS)
def test_malformed_traceparent_starts_a_new_trace(
    header: str, harness: Callable[..., Harness]
) -> None:
    """Any malformed traceparent: 200 OK and a fresh root trace, never an error."""
    h = harness()
    assert h.get("/", headers={"traceparent": header}).status_code == 200
    span = h.server_span()
    assert span.parent is None
    assert _hex(span)[0] not in header.lower()


def test_bound_fields_do_not_leak_into_the_next_request(harness: Callable[..., Harness]) -> None:
    """A request binding request_id leaves nothing bound for the next request."""
    h = harness()
    h.get("/post/1?request_id=first")
    h.get("/post/2")
    lines = h.lines()
    second = [
        line for line in lines if line.get("post_id") == 2 or line.get("url.path") == "/post/2"
    ]
    assert len(second) == 3
    assert all("request_id" not in line for line in second)
    assert any(line.get("request_id") == "first" for line in lines)


def test_metrics_are_served_by_the_app_and_excluded_from_telemetry(
    harness: Callable[..., Harness],
) -> None:
    """Opted in, /metrics serves the registry (no span, no series, no access line for
    itself)."""
    h = harness(http_serve_metrics=True)
    h.get("/")
    response = h.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert b'http_route="/"' in response.data
    assert b"/metrics" not in response.data
    assert [s.name for s in h.server_spans()] == ["GET /"]
    assert len([line for line in h.lines() if line["logger"] == "obskit.access"]) == 1


def test_metrics_are_not_on_the_app_port_by_default_and_the_path_is_configurable(
    harness: Callable[..., Harness],
) -> None:
    """By default the app's /metrics is the app's own (404 here); opted in,
    http_metrics_path moves it."""
    h = harness()
    assert h.get("/metrics").status_code == 404
    h = harness(http_serve_metrics=True, http_metrics_path="/internal/metrics")
    assert h.get("/internal/metrics").status_code == 200
    assert h.get("/metrics").status_code == 404


def test_excluded_paths_get_no_telemetry(harness: Callable[..., Harness]) -> None:
    """Health checks listed in http_excluded_paths: no span, no metric, no access line."""
    h = harness(http_excluded_paths=["/", "/post/*"])
    h.get("/")
    h.get("/post/3")
    h.get("/go")
    assert [s.name for s in h.server_spans()] == ["GET /go"]
    access = [line for line in h.lines() if line["logger"] == "obskit.access"]
    assert [line["url.path"] for line in access] == ["/go"]


CANARY = "canary-5f1d2c"


def test_secrets_never_reach_spans_logs_metrics_or_exemplars(
    harness: Callable[..., Harness],
) -> None:
    """Canary secrets in sensitive headers and query parameters are redacted everywhere,
    even with header capture on; ordinary captured headers are kept."""
    h = harness(
        http_capture_request_headers=["authorization", "cookie", "x-api-key", "x-team"],
        http_capture_response_headers=["set-cookie", "content-type"],
        http_redact=["pin"],
    )
    query = f"password={CANARY}&token={CANARY}&sig={CANARY}&api_key={CANARY}&pin={CANARY}&page=2"
    h.client.set_cookie("session", CANARY)  # the test client sends cookies from its jar
    h.get(
        f"/post/1?{query}",
        headers={"Authorization": f"Bearer {CANARY}", "X-Api-Key": CANARY, "X-Team": "payments"},
    )
    span = h.server_span()
    attributes = dict(span.attributes or {})
    assert attributes["http.request.header.authorization"] == ("[REDACTED]",)
    assert attributes["http.request.header.cookie"] == ("[REDACTED]",)
    assert attributes["http.request.header.x-api-key"] == ("[REDACTED]",)
    assert attributes["http.request.header.x-team"] == ("payments",)
    assert attributes["http.response.header.content-type"] == ("application/json",)
    assert attributes["url.query"] == (
        "password=[REDACTED]&token=[REDACTED]&sig=[REDACTED]&api_key=[REDACTED]"
        "&pin=[REDACTED]&page=[REDACTED]"
    )
    everything = json.dumps([dict(s.attributes or {}) for s in h.exporter.get_finished_spans()])
    everything += json.dumps(h.lines())
    everything += h.get(
        "/metrics", headers={"Accept": "application/openmetrics-text"}
    ).data.decode()
    assert CANARY not in everything


def test_client_address_only_with_pii_capture(harness: Callable[..., Harness]) -> None:
    """client.address appears on the span and access line only when capture_pii is on."""
    h = harness()
    h.get("/", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert "client.address" not in (h.server_span().attributes or {})
    assert "203.0.113.9" not in json.dumps(h.lines())
    h = harness(capture_pii=True)
    h.get("/", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert (h.server_spans()[-1].attributes or {})["client.address"] == "203.0.113.9"
    assert h.lines()[-1]["client.address"] == "203.0.113.9"


def test_traceresponse_header_can_be_turned_off(harness: Callable[..., Harness]) -> None:
    """http_traceresponse=False: no traceresponse header."""
    h = harness(http_traceresponse=False)
    assert "traceresponse" not in h.get("/").headers


def test_instrumenting_twice_and_several_apps(harness: Callable[..., Harness]) -> None:
    """instrument_flask twice on one app records once; two apps in one process both work."""
    h = harness()
    obskit.instrument_flask(h.app)
    h.get("/")
    assert len(h.server_spans()) == 1
    second = create_app()
    second.test_client().get("/post/5", buffered=True)
    assert [s.name for s in h.server_spans()] == ["GET /", "GET /post/<int:post_id>"]


def test_requests_before_init_pass_through(capsys: pytest.CaptureFixture[str]) -> None:
    """An instrumented app whose obskit is shut down serves requests untouched."""
    app = create_app()
    obskit.shutdown()
    response = app.test_client().get("/post/1", buffered=True)
    assert response.status_code == 200
    assert "traceresponse" not in response.headers


def test_access_log_can_be_turned_off(harness: Callable[..., Harness]) -> None:
    """http_access_log=False: no obskit.access lines."""
    h = harness(http_access_log=False)
    h.get("/")
    assert not [line for line in h.lines() if line["logger"] == "obskit.access"]
