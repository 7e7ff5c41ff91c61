"""Scenarios 2 and 3: a black-hole and a flapping collector never hold the app up;
exports end within their time bound, retries are bounded, spans flow after recovery,
and each failed export is counted under the reason it failed for."""

from __future__ import annotations

import threading
import time

import pytest
from opentelemetry import trace

import obskit
from obskit._lifecycle import self_stats as _self_stats
from tests.reliability.collector import FaultyCollector

TIMEOUT = 2.0


def _spans(n: int) -> float:
    """Make n spans; return the slowest span's wall time as seen by the caller."""
    slowest = 0.0
    for i in range(n):
        started = time.perf_counter()
        with trace.get_tracer("r").start_as_current_span(f"s{i}"):
            pass
        slowest = max(slowest, time.perf_counter() - started)
    return slowest


def _export_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("OtelBatch") and t.is_alive()}


def _init(**settings: object) -> tuple[obskit.Telemetry, threading.Thread]:
    """init(**settings); the handle and the batch processor's export thread it started
    (not one a test before left behind)."""
    before = _export_threads()
    handle = obskit.init(**settings)
    (thread,) = _export_threads() - before
    return handle, thread


@pytest.mark.slow
def test_black_hole_exports_end_within_their_timeout_and_requests_never_wait(
    collector: FaultyCollector,
) -> None:
    """Each export to a collector that never answers ends within the timeout (+10 %);
    spans made while that export hangs do not wait for it; the export thread survives."""
    collector.mode = "blackhole"
    handle, thread = _init(otlp_endpoint=collector.endpoint, otlp_timeout=TIMEOUT)
    _spans(50)
    flushed: list[float] = []

    def flush() -> None:
        started = time.monotonic()
        handle.force_flush(timeout=30)
        flushed.append(time.monotonic() - started)

    flusher = threading.Thread(target=flush)
    flusher.start()
    deadline = time.monotonic() + 5
    while not collector.attempts.get("blackhole") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert collector.attempts.get("blackhole")  # the export is now hanging on the collector
    started = time.monotonic()
    _spans(200)
    made = time.monotonic() - started
    # Requests never wait on export: the 200 spans were all made while the export still
    # hung (a span that waited would take the rest of the 2 s timeout). A wall-time bound
    # per span would measure the machine's scheduler instead, so none is asserted.
    assert flusher.is_alive()
    assert made < TIMEOUT / 4
    collector.mode = "up"  # the flush's next batch (the 200 spans) goes through at once
    flusher.join(timeout=30)
    (elapsed,) = flushed
    assert elapsed <= TIMEOUT * 1.1 + 0.2  # one export attempt, bounded by its timeout
    assert thread.is_alive()
    _spans(5)
    handle.force_flush(timeout=10)
    assert len(collector.wait_for(5)) >= 5


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "status", "reason"),
    [
        ("status", 429, "http_429"),
        ("status", 503, "http_503"),
        ("reset", 0, "connection_reset"),
        ("truncated", 0, "truncated_reply"),
    ],
    ids=["429-retry-after", "503-retry-after", "connection-reset", "truncated-reply"],
)
def test_flapping_collector_retries_are_bounded_and_spans_flow_again(
    collector: FaultyCollector, mode: str, status: int, reason: str
) -> None:
    """429/503 with Retry-After, resets and truncated replies: at most 6 attempts per
    batch within the export timeout, the failure counted once under its reason, no
    error reaches the app, and once the collector recovers the next batch arrives."""
    if mode == "truncated" and _urllib3_major() < 2:
        pytest.skip("urllib3 1.x does not enforce Content-Length: a truncated reply reads whole")
    collector.mode, collector.status, collector.retry_after = mode, status, "1"
    handle, thread = _init(otlp_endpoint=collector.endpoint, otlp_timeout=TIMEOUT)
    errors_before = _self_stats.value("obskit_export_errors", signal="traces", reason=reason)
    unclassified = _self_stats.value("obskit_export_errors", signal="traces", reason="failure")
    _spans(20)
    started = time.monotonic()
    handle.force_flush(timeout=30)
    elapsed = time.monotonic() - started
    attempts = collector.attempts.get(mode, 0)
    assert 1 <= attempts <= 6
    assert elapsed <= TIMEOUT * 1.1 + 0.5
    failed = _self_stats.value("obskit_export_errors", signal="traces", reason=reason)
    assert failed == errors_before + 1
    assert (
        _self_stats.value("obskit_export_errors", signal="traces", reason="failure") == unclassified
    )
    assert thread.is_alive()
    collector.mode = "up"
    _spans(3)
    handle.force_flush(timeout=10)
    names = {span.name for span in collector.spans}
    assert {"s0", "s1", "s2"} <= names


@pytest.mark.slow
def test_while_the_collector_is_down_batches_are_dropped_without_being_sent(
    collector: FaultyCollector,
) -> None:
    """After a failed export to a closed port, later batches are dropped and counted
    (reason unreachable) without encoding or sending, and once that is known only one
    ended span stays queued (the rest are dropped as they end: every span counted once);
    when the port opens again that span is exported, then spans flow as before."""
    handle = obskit.init(otlp_endpoint=collector.endpoint, otlp_timeout=TIMEOUT)
    collector.stop()
    _spans(5)
    handle.force_flush(timeout=30)  # fails: connection refused
    unreachable = _self_stats.value("obskit_export_errors", signal="traces", reason="unreachable")
    for _ in range(3):
        dropped = _self_stats.value("obskit_dropped", signal="traces", reason="export_failed")
        _spans(5)
        started = time.monotonic()
        handle.force_flush(timeout=30)
        assert time.monotonic() - started < 0.5  # no retries, no encoding
        assert (
            _self_stats.value("obskit_dropped", signal="traces", reason="export_failed")
            == dropped + 5
        )
    assert (
        _self_stats.value("obskit_export_errors", signal="traces", reason="unreachable")
        == unreachable + 3
    )
    collector.start()
    _spans(2)  # s0 stays queued, s1 is dropped: the collector is not known to be back yet
    handle.force_flush(timeout=10)
    assert [span.name for span in collector.spans] == ["s0"]
    _spans(3)
    handle.force_flush(timeout=10)
    assert [span.name for span in collector.spans] == ["s0", "s0", "s1", "s2"]


def _urllib3_major() -> int:
    """The installed urllib3's major version (what the OTLP/HTTP exporter reads with)."""
    import importlib.metadata

    return int(importlib.metadata.version("urllib3").split(".")[0])
