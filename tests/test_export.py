"""Spans reach a real OTLP receiver (HTTP and gRPC) with the right resource and links."""

from __future__ import annotations

import threading
import time

import pytest
from opentelemetry import trace

import obskit
from tests.receivers import BlackHole, OtlpGrpcReceiver, OtlpHttpReceiver


def _make_trace() -> tuple[str, str, str]:
    """Create a parent with one child; return (trace_id, parent_id, child_id) in hex."""
    tracer = trace.get_tracer("tests.export")
    with (
        tracer.start_as_current_span("parent") as parent,
        tracer.start_as_current_span("child", attributes={"order.id": 7}) as child,
    ):
        pass
    context = parent.get_span_context()
    return (
        format(context.trace_id, "032x"),
        format(context.span_id, "016x"),
        format(child.get_span_context().span_id, "016x"),
    )


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_spans_arrive_with_resource_and_parent_links(
    protocol: str, http_receiver: OtlpHttpReceiver, grpc_receiver: OtlpGrpcReceiver
) -> None:
    """Spans made after init() reach the receiver, linked, with the configured resource."""
    receiver = grpc_receiver if protocol == "grpc" else http_receiver
    obskit.init(
        service_name="checkout",
        service_version="1.2.3",
        environment="staging",
        resource_attributes={"team": "payments"},
        otlp_endpoint=receiver.endpoint,
        otlp_protocol=protocol,
        otlp_headers={"x-api-key": "secret"},
    )
    trace_id, parent_id, child_id = _make_trace()
    assert obskit.shutdown(timeout=10)
    spans = {span.name: span for span in receiver.wait_for(2)}
    assert set(spans) == {"parent", "child"}
    assert spans["parent"].trace_id == spans["child"].trace_id == trace_id
    assert spans["parent"].span_id == parent_id
    assert spans["child"].span_id == child_id
    assert spans["child"].parent_span_id == parent_id
    assert spans["parent"].parent_span_id == ""
    assert spans["child"].attributes == {"order.id": 7}
    resource = spans["child"].resource
    assert resource["service.name"] == "checkout"
    assert resource["service.version"] == "1.2.3"
    assert resource["deployment.environment.name"] == "staging"
    assert resource["team"] == "payments"
    assert resource["telemetry.sdk.language"] == "python"
    assert resource["telemetry.distro.name"] == "obskit"
    assert isinstance(resource["process.pid"], int)
    assert resource["host.name"]
    assert receiver.headers[0]["x-api-key"] == "secret"


def test_standard_otel_variables_configure_the_export(
    http_receiver: OtlpHttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES and OTEL_EXPORTER_OTLP_* work as users expect."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=loses,k8s.cluster.name=eu1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", http_receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t0k")
    obskit.init()
    _make_trace()
    obskit.shutdown(timeout=10)
    (span, *_) = http_receiver.wait_for(2)
    assert span.resource["service.name"] == "from-env"
    assert span.resource["k8s.cluster.name"] == "eu1"
    assert http_receiver.headers[0]["authorization"] == "Bearer t0k"


def test_traces_endpoint_is_used_as_is(http_receiver: OtlpHttpReceiver) -> None:
    """otlp_traces_endpoint (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) gets no /v1/traces suffix."""
    obskit.init(otlp_traces_endpoint=f"{http_receiver.endpoint}/v1/traces")
    _make_trace()
    obskit.shutdown(timeout=10)
    assert len(http_receiver.wait_for(2)) == 2


def test_shutdown_delivers_buffered_spans(http_receiver: OtlpHttpReceiver) -> None:
    """Spans still queued in the batch processor are sent by shutdown()."""
    obskit.init(otlp_endpoint=http_receiver.endpoint)
    tracer = trace.get_tracer("tests.export")
    for index in range(300):
        with tracer.start_as_current_span(f"span-{index}"):
            pass
    # The batch delay is 5 s: nothing has been sent yet unless the batch filled up.
    assert obskit.shutdown(timeout=10) is True
    assert len(http_receiver.spans) == 300


@pytest.mark.slow
def test_shutdown_returns_within_its_timeout_when_the_collector_never_answers(
    black_hole: BlackHole,
) -> None:
    """A collector that accepts but never replies cannot hold shutdown() past its timeout."""
    before = _export_threads()
    obskit.init(otlp_endpoint=black_hole.endpoint, otlp_timeout=30)
    (abandoned,) = _export_threads() - before
    _make_trace()
    started = time.monotonic()
    flushed = obskit.shutdown(timeout=2)
    elapsed = time.monotonic() - started
    assert flushed is False
    assert 1.9 <= elapsed < 2.5
    # obskit stopped the exporter's retries: once the hung request fails, the
    # export thread ends instead of retrying for the rest of its 30 s budget.
    black_hole.close()
    abandoned.join(timeout=5)
    assert not abandoned.is_alive()


def _export_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("OtelBatch") and t.is_alive()}


def test_unsampled_spans_are_not_exported_but_have_ids(http_receiver: OtlpHttpReceiver) -> None:
    """With ratio 0, spans still carry valid ids (for logs) and nothing is exported."""
    obskit.init(
        otlp_endpoint=http_receiver.endpoint, traces_sampler="traceidratio", traces_sampler_arg=0
    )
    with trace.get_tracer("t").start_as_current_span("dropped") as span:
        context = span.get_span_context()
    assert context.is_valid
    assert not context.trace_flags.sampled
    obskit.shutdown(timeout=10)
    assert http_receiver.spans == []


def test_force_flush_sends_buffered_spans_now(http_receiver: OtlpHttpReceiver) -> None:
    """Telemetry.force_flush() exports what is queued without waiting for the batch delay."""
    handle = obskit.init(otlp_endpoint=http_receiver.endpoint)
    _make_trace()
    assert http_receiver.spans == []
    assert handle.force_flush(timeout=10) is True
    assert len(http_receiver.spans) == 2
