"""Outgoing HTTP calls through each client library (requests, httpx sync and async,
urllib3, urllib.request, aiohttp) against a real server on 127.0.0.1: a CLIENT span per
request with OpenTelemetry's HTTP client attributes, the propagation headers the server
receives (sampled or not), the client histogram with its exemplar, redirect hops, and
the switch that turns each library off."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import obskit
from tests.conftest import openmetrics
from tests.http_clients import Driver, client_spans
from tests.http_origin import Origin

Spans = Callable[..., InMemorySpanExporter]


def _traceparent(headers: dict[str, str]) -> tuple[str, str, str]:
    version, trace_id, span_id, flags = headers["traceparent"].split("-")
    assert version == "00"
    return trace_id, span_id, flags


def _histogram_samples() -> list[Any]:
    family = openmetrics().get("http_client_request_duration_seconds")
    return [] if family is None else family.samples


def _count(status: str) -> float:
    return sum(
        sample.value
        for sample in _histogram_samples()
        if sample.name.endswith("_count")
        and sample.labels["http_response_status_code"] == status
        and sample.labels["server_address"] == "127.0.0.1"
        and sample.labels["http_request_method"] == "GET"
    )


def test_a_call_in_a_span_makes_one_client_span_with_the_conventions_attributes(
    driver: Driver, origin: Origin, spans: Spans
) -> None:
    """One CLIENT span, child of the active span, named after the method, with method,
    server address and port, the full URL, the status and the protocol version."""
    exporter = spans(service_name="client")
    with obskit.span("caller") as caller:
        status, body = driver.get(f"{origin.url}/echo/1")
    assert status == 200
    assert json.loads(body)["traceparent"]
    (span,) = client_spans(exporter)
    assert span.name == "GET"
    assert span.parent is not None
    assert span.parent.span_id == caller.get_span_context().span_id
    assert dict(span.attributes) == {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": origin.port,
        "url.full": f"{origin.url}/echo/1",
        "http.response.status_code": 200,
        "network.protocol.version": "1.1",
    }
    assert span.status.status_code == StatusCode.UNSET


def test_the_server_receives_the_client_spans_context_in_traceparent(
    driver: Driver, origin: Origin, spans: Spans
) -> None:
    """The request carries traceparent with the caller's trace id and the CLIENT span's id
    as parent, sampled."""
    exporter = spans(service_name="client")
    with obskit.span("caller") as caller:
        driver.get(f"{origin.url}/echo")
    (headers,) = origin.headers_of("/echo")
    trace_id, parent_id, flags = _traceparent(headers)
    (span,) = client_spans(exporter)
    assert trace_id == format(caller.get_span_context().trace_id, "032x")
    assert parent_id == format(span.context.span_id, "016x")
    assert int(flags, 16) & 1


def test_an_unsampled_trace_still_sends_its_trace_id(
    driver: Driver, origin: Origin, spans: Spans
) -> None:
    """Inside an unsampled trace no span is made (none would be exported), but
    traceparent carries the caller's context (flag unsampled) so the next service's log
    lines keep its trace id."""
    exporter = spans(service_name="client", traces_sampler="always_off")
    with obskit.span("caller") as caller:
        driver.get(f"{origin.url}/echo")
    (headers,) = origin.headers_of("/echo")
    trace_id, parent_id, flags = _traceparent(headers)
    assert trace_id == format(caller.get_span_context().trace_id, "032x")
    assert parent_id == format(caller.get_span_context().span_id, "016x")
    assert not int(flags, 16) & 1
    assert exporter.get_finished_spans() == ()
    assert _count("200") == 1
    assert all(sample.exemplar is None for sample in _histogram_samples())


def test_baggage_is_propagated_with_the_trace(driver: Driver, origin: Origin, spans: Spans) -> None:
    """The configured propagators inject baggage next to traceparent."""
    spans(service_name="client")
    token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with obskit.span("caller"):
            driver.get(f"{origin.url}/echo")
    finally:
        otel_context.detach(token)
    (headers,) = origin.headers_of("/echo")
    assert headers["baggage"] == "tenant=acme"
    assert "traceparent" in headers


def test_the_histogram_counts_the_call_with_the_spans_exemplar(
    driver: Driver, origin: Origin, spans: Spans
) -> None:
    """http_client_request_duration_seconds{method, server address, status} counts the
    call; its bucket's exemplar is the CLIENT span's trace and span id."""
    exporter = spans(service_name="client")
    with obskit.span("caller"):
        driver.get(f"{origin.url}/status/404")
    (span,) = client_spans(exporter)
    assert span.attributes["error.type"] == "404"
    assert span.status.status_code == StatusCode.ERROR
    assert _count("404") == 1
    exemplars = [s.exemplar for s in _histogram_samples() if s.exemplar is not None]
    assert exemplars
    assert {e.labels["trace_id"] for e in exemplars} == {format(span.context.trace_id, "032x")}
    assert {e.labels["span_id"] for e in exemplars} == {format(span.context.span_id, "016x")}


def test_outside_any_span_a_call_is_timed_but_makes_no_span_and_no_traceparent(
    driver: Driver, origin: Origin, spans: Spans
) -> None:
    """Without an active span: no span, no traceparent sent, one observation without
    exemplar."""
    exporter = spans(service_name="client")
    status, _ = driver.get(f"{origin.url}/echo")
    assert status == 200
    assert exporter.get_finished_spans() == ()
    (headers,) = origin.headers_of("/echo")
    assert "traceparent" not in headers
    assert _count("200") == 1
    assert all(sample.exemplar is None for sample in _histogram_samples())


def test_each_redirect_hop_is_a_span_numbered_by_resend_count(
    driver: Driver, origin: Origin, spans: Spans
) -> None:
    """Two redirects: three sibling CLIENT spans (302, 302, 200) with
    http.request.resend_count 1 and 2 on the hops, each hop's request carrying its own
    span as parent."""
    exporter = spans(service_name="client")
    with obskit.span("caller") as caller:
        status, _ = driver.get(f"{origin.url}/redirect/2")
    assert status == 200
    hops = client_spans(exporter)
    assert [span.attributes["http.response.status_code"] for span in hops] == [302, 302, 200]
    assert [span.attributes.get("http.request.resend_count") for span in hops] == [None, 1, 2]
    assert [span.attributes["url.full"] for span in hops] == [
        f"{origin.url}/redirect/2",
        f"{origin.url}/redirect/1",
        f"{origin.url}/echo",
    ]
    assert {span.parent.span_id for span in hops} == {caller.get_span_context().span_id}
    sent = [_traceparent(headers)[1] for _, headers in origin.received]
    assert sent == [format(span.context.span_id, "016x") for span in hops]


def test_disabled_instrumentations_switches_the_library_off(
    driver: Driver, origin: Origin, spans: Spans
) -> None:
    """With the library (and any it is built on) named in disabled_instrumentations: no
    span, no header, no observation; the call works as without obskit."""
    off = [driver.name, *driver.beneath]
    exporter = spans(service_name="client", disabled_instrumentations=off)
    with obskit.span("caller"):
        status, _ = driver.get(f"{origin.url}/echo")
    assert status == 200
    assert client_spans(exporter) == []
    (headers,) = origin.headers_of("/echo")
    assert "traceparent" not in headers
    assert _count("200") == 0


def test_after_shutdown_calls_pass_through(driver: Driver, origin: Origin, spans: Spans) -> None:
    """After shutdown() the patched library records nothing and sends no header."""
    spans(service_name="client")
    obskit.shutdown()
    status, _ = driver.get(f"{origin.url}/echo")
    assert status == 200
    (headers,) = origin.headers_of("/echo")
    assert "traceparent" not in headers


def test_a_non_standard_method_is_other_and_the_span_is_named_http(
    origin: Origin, spans: Spans
) -> None:
    """A method outside the standard ones: span named HTTP, http.request.method _OTHER,
    the original in http.request.method_original, the histogram's label _OTHER."""
    requests = pytest.importorskip("requests")
    exporter = spans(service_name="client")
    with obskit.span("caller"):
        requests.request("PURGE", f"{origin.url}/echo", timeout=30)
    (span,) = client_spans(exporter)
    assert span.name == "HTTP"
    assert span.attributes["http.request.method"] == "_OTHER"
    assert span.attributes["http.request.method_original"] == "PURGE"
    labels = {s.labels["http_request_method"] for s in _histogram_samples()}
    assert labels == {"_OTHER"}
