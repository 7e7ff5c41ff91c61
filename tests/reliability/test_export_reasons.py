"""Scenario 3 (reasons): every failed export is counted in
``obskit_export_errors_total{reason}`` under why it failed, over real HTTP and gRPC."""

from __future__ import annotations

import time
from collections.abc import Sequence

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

import obskit
from obskit._lifecycle import self_stats as _self_stats
from obskit._traces.export_reasons import REASONS, ReasonRecorder, http_reason
from obskit._traces.guarded_export import GuardedExporter
from tests.reliability.collector import FaultyCollector, FaultyGrpcCollector

TIMEOUT = 1.0


def _fail_one_batch(
    endpoint: str, protocol: str = "http/protobuf", timeout: float = TIMEOUT
) -> dict[str, float]:
    """Export one span to ``endpoint``; return how the export-error counters moved."""
    before = _errors()
    handle = obskit.init(otlp_endpoint=endpoint, otlp_protocol=protocol, otlp_timeout=timeout)
    with trace.get_tracer("r").start_as_current_span("lost"):
        pass
    handle.force_flush(timeout=30)
    after = _errors()
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def _errors() -> dict[str, float]:
    return {
        dict(labels)["reason"]: amount
        for (metric, labels), amount in _self_stats.snapshot().items()
        if metric == "obskit_export_errors"
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "status", "reason"),
    [
        ("status", 400, "http_400"),
        ("status", 413, "http_413"),
        ("status", 418, "http_4xx"),
        ("status", 502, "http_502"),
        ("blackhole", 0, "timeout"),
    ],
)
def test_http_failures_are_counted_by_status_and_timeout(
    collector: FaultyCollector, mode: str, status: int, reason: str
) -> None:
    """A non-retryable status, an unlisted status (its class) and a black hole (timeout)
    are each counted once under their own reason."""
    collector.mode, collector.status = mode, status
    assert _fail_one_batch(collector.endpoint) == {reason: 1}


@pytest.mark.slow
def test_a_closed_port_is_connection_refused_then_unreachable(
    collector: FaultyCollector,
) -> None:
    """The first batch to a closed port counts connection_refused; later batches are
    dropped by the reachability probe and count unreachable."""
    collector.stop()
    handle = obskit.init(otlp_endpoint=collector.endpoint, otlp_timeout=TIMEOUT)
    before = _errors()
    for _ in range(2):
        with trace.get_tracer("r").start_as_current_span("lost"):
            pass
        handle.force_flush(timeout=30)
    after = _errors()
    moved = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    assert moved == {"connection_refused": 1, "unreachable": 1}


def test_a_retry_at_the_deadline_keeps_the_reason_of_the_attempt_before(
    collector: FaultyCollector,
) -> None:
    """OTLP/HTTP retries with the time left, which can be 0: requests then refuses the
    request before sending it (ValueError). That retry must not relabel the export's
    failure: the refused connection before it stays the reason; with no attempt before
    it, the export ran out of time."""
    import requests

    from obskit._traces.export_reasons import recording_session

    collector.stop()
    recorder = ReasonRecorder()
    session = recording_session(recorder)
    url = collector.endpoint + "/v1/traces"
    recorder.clear()
    for timeout in (TIMEOUT, 0.0, (0, 1.0)):
        with pytest.raises((requests.ConnectionError, ValueError)):
            session.post(url, data=b"", timeout=timeout)
        assert recorder.reason() == "connection_refused", timeout
    recorder.clear()
    with pytest.raises(ValueError, match="timeout"):
        session.post(url, data=b"", timeout=0.0)
    assert recorder.reason() == "timeout"


def test_an_attempt_past_the_deadline_is_refused_without_sending(
    collector: FaultyCollector,
) -> None:
    """obskit's session gives a request no more than the export's time left, and once
    that is spent refuses the exporter's next attempt before connecting (an exporter
    retrying past its timeout stops there); the attempt before keeps its reason."""
    import requests

    from obskit._traces.export_reasons import recording_session

    recorder = ReasonRecorder()
    session = recording_session(recorder)
    url = collector.endpoint + "/v1/traces"
    collector.mode, collector.status = "status", 503
    attempt = recorder.clear(deadline=time.monotonic() + 30)
    assert session.post(url, data=b"", timeout=30).status_code == 503
    assert recorder.reason() == "http_503"
    attempt.deadline = time.monotonic()
    with pytest.raises(requests.Timeout):
        session.post(url, data=b"", timeout=30)
    assert collector.attempts == {"status": 1}
    assert recorder.reason() == "http_503"
    collector.mode = "blackhole"
    recorder.clear(deadline=time.monotonic() + 0.3)
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        session.post(url, data=b"", timeout=30)
    assert time.monotonic() - started < 2
    assert recorder.reason() == "timeout"


@pytest.mark.slow
def test_tls_to_a_plaintext_port_counts_tls_error(collector: FaultyCollector) -> None:
    """An https:// endpoint at a plaintext collector fails the handshake: tls_error."""
    endpoint = collector.endpoint.replace("http://", "https://")
    assert _fail_one_batch(endpoint) == {"tls_error": 1}


@pytest.mark.slow
def test_an_unresolvable_host_counts_dns_error() -> None:
    """A host name that cannot resolve (.invalid, RFC 2606) counts dns_error."""
    assert _fail_one_batch("http://no-such-host.invalid:4318") == {"dns_error": 1}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "grpc_invalid_argument"),
        (grpc.StatusCode.UNAUTHENTICATED, "grpc_unauthenticated"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "grpc_resource_exhausted"),
    ],
)
def test_grpc_failures_are_counted_by_status_code(code: grpc.StatusCode, reason: str) -> None:
    """A gRPC collector answering a status code is counted under that code's name."""
    collector = FaultyGrpcCollector(code)
    try:
        # A timeout shorter than the exporter's first backoff (0.8-1.2 s): the SDK retries
        # RESOURCE_EXHAUSTED when the backoff fits the deadline, and a retry cut short by
        # it would be counted as a deadline instead of the status code under test.
        assert _fail_one_batch(collector.endpoint, protocol="grpc", timeout=0.7) == {reason: 1}
        assert collector.attempts >= 1
    finally:
        collector.close()


class _FailingExporter(SpanExporter):
    """An exporter without obskit's recording seam (a stand-in for an unknown version)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.FAILURE


def test_without_a_recorded_outcome_the_reason_is_failure() -> None:
    """An exporter whose attempts obskit cannot observe still counts, as reason=failure."""
    before = _self_stats.value("obskit_export_errors", signal="traces", reason="failure")
    guarded = GuardedExporter(_FailingExporter(), reasons=ReasonRecorder())
    assert guarded.export([]) is SpanExportResult.FAILURE
    assert (
        _self_stats.value("obskit_export_errors", signal="traces", reason="failure") == before + 1
    )


def test_reason_label_values_are_bounded() -> None:
    """Every HTTP status maps into the documented, finite list of reasons."""
    assert {http_reason(status) for status in range(1000)} <= set(REASONS)
    assert len(REASONS) < 40
