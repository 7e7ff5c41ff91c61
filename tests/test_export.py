"""Spans reach a real OTLP receiver (HTTP and gRPC) with the right resource and links;
an export never outlasts its timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

import obskit
from obskit._lifecycle import self_stats as _self_stats
from obskit._traces.guarded_export import GRACE, CountingBatchSpanProcessor, GuardedExporter
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


class _StuckExporter(SpanExporter):
    """Blocks in export() until released, like an OTLP exporter before 1.28 that retries
    a failing collector for a minute whatever its timeout (its shutdown() does not stop it)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        self.release.wait(10)
        return SpanExportResult.SUCCESS


def _timeouts() -> float:
    return _self_stats.value("obskit_export_errors", signal="traces", reason="timeout")


def test_an_export_past_its_timeout_is_cut_off_and_the_next_waits_for_it() -> None:
    """With a timeout, an export whose exporter is still busy at the deadline fails then
    (counted as reason timeout); the next export never runs the exporter a second time
    at once but waits for the first within its own timeout; once the exporter is free
    again, exports go through."""
    stuck = _StuckExporter()
    guarded = GuardedExporter(stuck, timeout=0.3)
    before = _timeouts()
    try:
        for _ in range(2):
            started = time.monotonic()
            assert guarded.export([]) is SpanExportResult.FAILURE
            assert 0.3 <= time.monotonic() - started < 0.3 + GRACE + 0.3
        assert stuck.calls == 1
        assert _timeouts() - before == 2
    finally:
        stuck.release.set()
    assert guarded.export([]) is SpanExportResult.SUCCESS
    assert stuck.calls == 2


def test_shutdown_ends_an_exports_wait_at_once() -> None:
    """shutdown() (obskit.shutdown() past its deadline) ends a waiting export at once,
    even when the exporter's own shutdown does not interrupt it."""
    stuck = _StuckExporter()
    guarded = GuardedExporter(stuck, timeout=30)
    results: list[SpanExportResult] = []
    waiting = threading.Thread(target=lambda: results.append(guarded.export([])))
    waiting.start()
    try:
        deadline = time.monotonic() + 5
        while not stuck.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        guarded.shutdown()
        waiting.join(timeout=5)
        assert time.monotonic() - started < 1
        assert results == [SpanExportResult.FAILURE]
    finally:
        stuck.release.set()


def test_a_timed_export_runs_in_the_callers_context() -> None:
    """The export thread sees the context of the batch processor's thread, which tells
    instrumented HTTP clients not to trace the export's own requests."""
    seen: list[object] = []

    class Looking(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            seen.append(context.get_value("obskit-test-marker"))
            return SpanExportResult.SUCCESS

    token = context.attach(context.set_value("obskit-test-marker", "set by the caller"))
    try:
        assert GuardedExporter(Looking(), timeout=5).export([]) is SpanExportResult.SUCCESS
    finally:
        context.detach(token)
    assert seen == ["set by the caller"]


def test_the_processor_counts_what_waits_in_its_queue() -> None:
    """CountingBatchSpanProcessor.queued (obskit's own count: the SDK publishes none)
    follows the SDK's queue: it stays at the queue's size while the queue is full, each
    span dropped then counted as queue_full, and is 0 once a flush has exported all."""
    held = _StuckExporter()
    processor = CountingBatchSpanProcessor(
        held, max_queue_size=4, max_export_batch_size=2, schedule_delay_millis=60_000
    )
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    before = _self_stats.value("obskit_dropped", signal="traces", reason="queue_full")
    try:
        for i in range(2):  # one batch: the worker takes it and blocks in export
            tracer.start_span(f"first{i}").end()
        deadline = time.monotonic() + 5
        while not held.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert held.calls == 1
        assert processor.queued == 0
        for i in range(7):
            tracer.start_span(f"s{i}").end()
        assert processor.queued == 4
        dropped = _self_stats.value("obskit_dropped", signal="traces", reason="queue_full")
        assert dropped - before == 3
        held.release.set()
        assert processor.force_flush(timeout_millis=5000)
        assert processor.queued == 0
    finally:
        held.release.set()
        provider.shutdown()
