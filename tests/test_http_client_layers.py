"""How the HTTP client instrumentations fit together and with the rest of the process:
one span per request when requests drives urllib3, urllib3's own retries as resends,
OpenTelemetry's suppression (an exporter's own requests are never traced), a library
imported after init(), nothing imported by obskit itself, the cardinality guard, and an
internal failure that never reaches the caller."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import obskit
from obskit._http import client_call
from obskit._lifecycle.internal_errors import internal_errors
from tests.conftest import openmetrics
from tests.http_clients import DRIVERS, Driver, available, client_spans
from tests.http_origin import Origin
from tests.receivers import OtlpHttpReceiver
from tests.servers import run_python

Spans = Callable[..., InMemorySpanExporter]


def _observations() -> float:
    family = openmetrics().get("http_client_request_duration_seconds")
    if family is None:
        return 0
    return sum(sample.value for sample in family.samples if sample.name.endswith("_count"))


def _parents_sent(origin: Origin) -> list[str]:
    return [headers["traceparent"].split("-")[2] for _, headers in origin.received]


@pytest.mark.parametrize("off", [(), ("requests",)], ids=["both-on", "requests-off"])
def test_requests_over_urllib3_makes_one_span_whichever_layer_records_it(
    origin: Origin, spans: Spans, off: tuple[str, ...]
) -> None:
    """requests sends through urllib3: one CLIENT span and one observation per request,
    made by requests' layer, or by urllib3's when requests' is switched off."""
    requests = pytest.importorskip("requests")
    exporter = spans(service_name="client", disabled_instrumentations=list(off))
    with obskit.span("caller"):
        assert requests.get(f"{origin.url}/echo", timeout=10).status_code == 200
    (span,) = client_spans(exporter)
    assert span.attributes["url.full"] == f"{origin.url}/echo"
    assert _observations() == 1
    assert _parents_sent(origin) == [format(span.context.span_id, "016x")]


def test_urllib3_retries_are_resends_with_their_own_spans(origin: Origin, spans: Spans) -> None:
    """urllib3's Retry on 503: each try is a CLIENT span (503, 503, 200) numbered by
    resend_count, each request carrying its own span as parent."""
    urllib3 = pytest.importorskip("urllib3")
    exporter = spans(service_name="client")
    retry = urllib3.Retry(total=3, status_forcelist=[503], backoff_factor=0)
    with obskit.span("caller"), urllib3.PoolManager() as pool:
        response = pool.request("GET", f"{origin.url}/flaky/pool/2", retries=retry)
    assert response.status == 200
    tries = client_spans(exporter)
    assert [s.attributes["http.response.status_code"] for s in tries] == [503, 503, 200]
    assert [s.attributes.get("http.request.resend_count") for s in tries] == [None, 1, 2]
    assert [s.attributes.get("error.type") for s in tries] == ["503", "503", None]
    assert _parents_sent(origin) == [format(s.context.span_id, "016x") for s in tries]


def test_retries_under_requests_and_its_redirects_count_on(origin: Origin, spans: Spans) -> None:
    """A requests adapter with urllib3 retries, then a redirect: one span per request sent
    (503, 200 after a retry; then 302, 200 on a second call's hop), resend_count counting
    within each call, never two spans for one request."""
    requests = pytest.importorskip("requests")
    urllib3 = pytest.importorskip("urllib3")
    exporter = spans(service_name="client")
    session = requests.Session()
    retry = urllib3.Retry(total=2, status_forcelist=[503], backoff_factor=0)
    session.mount("http://", requests.adapters.HTTPAdapter(max_retries=retry))
    with obskit.span("caller"), session:
        assert session.get(f"{origin.url}/flaky/session/1", timeout=10).status_code == 200
        assert session.get(f"{origin.url}/redirect/1", timeout=10).status_code == 200
    sent = client_spans(exporter)
    assert [s.attributes["http.response.status_code"] for s in sent] == [503, 200, 302, 200]
    assert [s.attributes.get("http.request.resend_count") for s in sent] == [None, 1, None, 1]
    assert _parents_sent(origin) == [format(s.context.span_id, "016x") for s in sent]


class _PostingExporter(SpanExporter):
    """An exporter that sends each batch to a URL with requests, as OTLP's does."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.batches = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        import requests

        self.batches += 1
        requests.post(self.url, data=b"batch", timeout=10)
        return SpanExportResult.SUCCESS


def test_an_exporters_own_requests_are_not_traced(origin: Origin, spans: Spans) -> None:
    """The SDK marks its exports with OpenTelemetry's suppression: an exporter that posts
    with requests, called while a span is still active, makes no span (no loop of spans
    exporting spans), no observation and sends no traceparent."""
    pytest.importorskip("requests")
    handle = obskit.init(service_name="client")
    posting = _PostingExporter(f"{origin.url}/echo")
    assert handle.tracer_provider is not None
    handle.tracer_provider.add_span_processor(SimpleSpanProcessor(posting))
    with obskit.span("caller"), obskit.span("inner"):
        pass
    assert posting.batches == 2
    assert len(origin.received) == 2
    assert all("traceparent" not in headers for _, headers in origin.received)
    assert _observations() == 0


def test_the_otlp_exporters_requests_are_not_traced(http_receiver: OtlpHttpReceiver) -> None:
    """Spans exported over OTLP/HTTP (requests underneath): the receiver gets only the
    app's span, and the client histogram counts nothing."""
    pytest.importorskip("requests")
    handle = obskit.init(service_name="client", otlp_endpoint=http_receiver.endpoint)
    with obskit.span("caller"):
        pass
    for _ in range(2):  # (a traced export would make a span for the next one)
        assert handle.force_flush(10)
    assert [span.name for span in http_receiver.wait_for(1)] == ["caller"]
    assert _observations() == 0


def test_the_plain_suppression_key_is_honoured(origin: Origin, spans: Spans) -> None:
    """``suppress_instrumentation`` set in the context (as OpenTelemetry's
    instrumentations accept it) passes the call through untouched."""
    requests = pytest.importorskip("requests")
    exporter = spans(service_name="client")
    with obskit.span("caller"):
        token = otel_context.attach(otel_context.set_value("suppress_instrumentation", True))
        try:
            requests.get(f"{origin.url}/echo", timeout=10)
        finally:
            otel_context.detach(token)
    assert client_spans(exporter) == []
    assert "traceparent" not in origin.received[0][1]
    assert _observations() == 0


@pytest.mark.parametrize("driver", DRIVERS, ids=repr)
def test_a_library_imported_after_init_is_instrumented(driver: Driver, origin: Origin) -> None:
    """init() first, the library imported afterwards: its calls make CLIENT spans.
    (urllib.request is the exception: prometheus-client imports it, so init() finds it
    imported.)"""
    available(driver)
    code = f"""
        import json, sys
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
        import obskit
        handle = obskit.init(service_name="late", traces_exporter="none", log_level="error")
        exporter = InMemorySpanExporter()
        handle.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        before = {driver.module!r} in sys.modules
        from tests.http_clients import DRIVERS
        driver = [d for d in DRIVERS if repr(d) == {repr(driver)!r}][0]
        with obskit.span("caller"):
            status, body = driver.get({origin.url + "/echo"!r}, timeout=10)
        print(json.dumps([before, status, [s.name for s in exporter.get_finished_spans()]]))
    """
    result = run_python(code, timeout=60)
    assert result.returncode == 0, result.stderr
    before = driver.module == "urllib.request"
    assert json.loads(result.stdout.splitlines()[-1]) == [before, 200, ["GET", "caller"]]
    assert "traceparent" in origin.received[0][1]


def test_obskit_imports_no_http_client_library() -> None:
    """`import obskit` and `init()` import none of the client libraries (nor obskit's
    modules for them): each is instrumented only once the application imports it
    (urllib.request aside: prometheus-client imports it)."""
    code = """
        import json, sys
        import obskit
        obskit.init(service_name="quiet", traces_exporter="none", log_level="error")
        names = ("requests", "httpx", "urllib3", "aiohttp",
                 "obskit.integrations.http_clients.requests",
                 "obskit.integrations.http_clients.httpx")
        print(json.dumps([name for name in names if name in sys.modules]))
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == []


def test_server_addresses_are_under_the_cardinality_guard(spans: Spans) -> None:
    """Calls to more hosts than the series cap: the extra ones share the overflow series."""
    requests = pytest.importorskip("requests")
    spans(service_name="client", metrics_max_series=2)
    for host in range(2, 6):  # nothing listens there: refused, counted without status
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.{host}:9/", timeout=5)
    family = openmetrics()["http_client_request_duration_seconds"]
    addresses = {s.labels["server_address"] for s in family.samples if s.name.endswith("_count")}
    assert addresses == {"127.0.0.2", "127.0.0.3", "__overflow__"}


def test_an_internal_failure_never_reaches_the_caller(
    origin: Origin, spans: Spans, monkeypatch: pytest.MonkeyPatch
) -> None:
    """obskit's own code failing while it records a call (simulated: nothing real makes
    it fail) is counted as an internal error; the caller gets its response."""
    requests = pytest.importorskip("requests")
    spans(service_name="client")

    def broken(*args: Any) -> Any:
        raise RuntimeError("simulated obskit failure")

    monkeypatch.setattr(client_call, "target", broken)
    with obskit.span("caller"):
        assert requests.get(f"{origin.url}/echo", timeout=10).status_code == 200
    assert internal_errors().get(client_call.COMPONENT, 0) >= 1
    assert len(origin.received) == 1
