"""Hostile outgoing calls through each client library: credentials and a token in the URL,
a server that resets the connection, a timeout, a redirect loop, a 50 MB streamed
response, a request body that raises. The caller sees exactly what it sees without
obskit; spans and metrics carry no secret."""

from __future__ import annotations

import re
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import generate_latest

import obskit
from obskit._http.client_call import error_type
from obskit._metrics import registry
from tests.http_clients import Driver, client_spans
from tests.http_origin import Origin

Spans = Callable[..., InMemorySpanExporter]
#: The size of the streamed response.
LARGE = 50 * 1024 * 1024


def _outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    """What the caller sees: what the call returned, or the exception's type and text
    (object addresses left out: they differ from one run to the next)."""
    try:
        return ("returned", call())
    except Exception as error:
        return ("raised", type(error), re.sub(r"0x[0-9a-f]+", "0x?", str(error)))


def _without_then_with_obskit(
    driver: Driver, spans: Spans, call: Callable[[], Any]
) -> tuple[tuple[Any, ...], tuple[Any, ...], InMemorySpanExporter]:
    """The outcome of ``call`` with the library's instrumentation off, then on (inside
    a span); and the exporter of the second run."""
    obskit.init(service_name="client", disabled_instrumentations=[driver.name, *driver.beneath])
    without = _outcome(call)
    exporter = spans(service_name="client")
    with obskit.span("caller"):
        with_obskit = _outcome(call)
    return without, with_obskit, exporter


def _exposition() -> str:
    return generate_latest(registry.store().registry).decode()


def test_credentials_and_query_values_are_redacted_and_never_in_metrics(
    driver: Driver, origin: Origin, spans: Spans
) -> None:
    """user:password@ is dropped and ?token= redacted in url.full; the exposition holds
    neither; the caller's outcome is the same as without obskit."""
    url = f"http://agent:pw-s3cret@127.0.0.1:{origin.port}/echo?token=tok-s3cret&page=2"
    without, with_obskit, exporter = _without_then_with_obskit(
        driver, spans, lambda: driver.get(url, timeout=10)
    )
    if without[0] == "returned":  # (the echoed headers differ: traceparent)
        assert with_obskit[0] == "returned"
        assert with_obskit[1][0] == without[1][0] == 200
    else:  # (urllib.request takes user:password@ for part of the host name)
        assert with_obskit == without
    spans_ = client_spans(exporter)
    assert spans_
    for span in spans_:
        assert span.attributes["url.full"] == (
            f"http://127.0.0.1:{origin.port}/echo?token=[REDACTED]&page=[REDACTED]"
        )
        assert span.attributes["server.address"] == "127.0.0.1"
        assert "s3cret" not in repr(dict(span.attributes)) + repr(span.status) + repr(span.events)
    text = _exposition()
    assert "http_client_request_duration_seconds" in text
    assert "s3cret" not in text
    assert "agent" not in text


def test_a_connection_reset_reaches_the_caller_as_without_obskit(
    driver: Driver, origin: Origin, spans: Spans
) -> None:
    """The server resets the connection: the caller gets the same exception type and text
    as without obskit; the last CLIENT span has it as error.type, status ERROR; the
    histogram counts it with an empty status."""
    without, with_obskit, exporter = _without_then_with_obskit(
        driver, spans, lambda: driver.get(f"{origin.url}/reset", timeout=10)
    )
    assert without[0] == "raised"
    assert with_obskit == without
    last = client_spans(exporter)[-1]
    assert last.attributes["error.type"] == error_type_of(with_obskit[1])
    assert "http.response.status_code" not in last.attributes
    assert last.status.status_code == StatusCode.ERROR
    assert 'http_response_status_code=""' in _exposition()


def error_type_of(kind: type[BaseException]) -> str:
    try:
        raise kind.__new__(kind)
    except BaseException as error:
        return error_type(error)


def test_a_timeout_reaches_the_caller_as_without_obskit(
    driver: Driver, origin: Origin, spans: Spans
) -> None:
    """A server slower than the call's timeout: the same exception type and text as
    without obskit, recorded as error.type on the last CLIENT span."""
    without, with_obskit, exporter = _without_then_with_obskit(
        driver, spans, lambda: driver.get(f"{origin.url}/slow/1", timeout=0.2)
    )
    assert without[0] == "raised"
    assert with_obskit == without
    last = client_spans(exporter)[-1]
    assert last.attributes["error.type"] == error_type_of(with_obskit[1])


def test_a_redirect_loop_reaches_the_caller_as_without_obskit(
    driver: Driver, origin: Origin, spans: Spans
) -> None:
    """A redirect to itself for ever: the library's own limit ends it with the same
    exception as without obskit; each request sent is a span numbered by resend_count."""
    without, with_obskit, exporter = _without_then_with_obskit(
        driver, spans, lambda: driver.get(f"{origin.url}/loop", timeout=10)
    )
    assert without[0] == "raised"
    assert with_obskit == without
    hops = client_spans(exporter)
    assert 2 < len(hops) <= 32
    counts = [span.attributes.get("http.request.resend_count", 0) for span in hops]
    assert counts == list(range(len(hops)))


def test_a_50_mb_streamed_response_is_not_buffered(
    driver: Driver, origin: Origin, spans: Spans
) -> None:
    """A 50 MB response read as a stream: the span has ended when the headers are in, the
    caller reads every byte itself, and memory never holds the body."""
    exporter = spans(service_name="client")
    ended_before_the_body: list[bool] = []

    def between() -> None:
        ended_before_the_body.append(len(client_spans(exporter)) == 1)

    tracemalloc.start()
    try:
        with obskit.span("caller"):
            status, read = driver.stream(f"{origin.url}/bytes/{LARGE}", between)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (status, read) == (200, LARGE)
    assert ended_before_the_body == [True]
    assert peak < LARGE // 4
    (span,) = client_spans(exporter)
    assert span.attributes["http.response.status_code"] == 200


class Boom(Exception):
    """Raised by a request body while it is sent."""


def test_an_exception_from_the_request_body_is_the_same_object(
    driver: Driver, origin: Origin, spans: Spans
) -> None:
    """A request body whose producer raises: the caller catches what it catches without
    obskit (that very exception object, or the library's own wrapper of it); the CLIENT
    span records the qualified class name of what the library raised."""

    def post() -> tuple[BaseException, Boom]:
        boom = Boom("the body failed")

        def pieces() -> Iterator[bytes]:
            yield b"first piece"
            raise boom

        try:
            driver.post(f"{origin.url}/echo", pieces())
        except Exception as error:
            return error, boom
        raise AssertionError("the post did not raise")

    obskit.init(service_name="client", disabled_instrumentations=[driver.name, *driver.beneath])
    without, boom = post()
    exporter = spans(service_name="client")
    with obskit.span("caller"):
        caught, boom_too = post()
    assert type(caught) is type(without)
    if without is boom:
        assert caught is boom_too
    else:  # (aiohttp raises its own error, caused by the body's)
        assert caught.__cause__ is boom_too
    (span,) = client_spans(exporter)
    assert span.attributes["error.type"] == error_type(caught)
    assert span.status.status_code == StatusCode.ERROR
    assert "the body failed" not in repr(span.status) + repr(span.events)
