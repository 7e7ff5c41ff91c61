"""Scenario 4 end to end: an exporter that raises 100 times, then works, behind the real
batch span processor, with the example Flask app and a real OTLP/HTTP receiver."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

import obskit
from examples.flask_app import create_app
from obskit._lifecycle import internal_errors as _internal_errors
from tests.receivers import OtlpHttpReceiver

FAULTS = 100
PATHS = ["/", "/post/3", "/missing", "/unavailable", "/fail", "/go"]
ROUNDS = 10  # 2 x 10 rounds x 7 spans: more exports than faults, one span each
SPANS_PER_ROUND = 7  # a server span per request, plus load_post's span under /post/3
OBSKIT_HEADERS = {"traceresponse"}  # added by obskit, absent when it is disabled


def _responses(app: Any) -> list[tuple[int, list[tuple[str, str]], bytes]]:
    client = app.test_client()
    replies = []
    for _ in range(ROUNDS):
        for path in PATHS:
            response = client.get(path, buffered=True)
            headers = [(k, v) for k, v in response.headers if k.lower() not in OBSKIT_HEADERS]
            replies.append((response.status_code, headers, response.data))
    return replies


@pytest.fixture
def disabled_responses(
    monkeypatch: pytest.MonkeyPatch,
) -> list[tuple[int, list[tuple[str, str]], bytes]]:
    """The example app's responses with obskit disabled (OTEL_SDK_DISABLED)."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    responses = _responses(create_app())
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    obskit.shutdown()
    return responses


@pytest.mark.slow
def test_an_exporter_raising_100_times_behind_the_batch_processor_then_recovers(
    http_receiver: OtlpHttpReceiver,
    disabled_responses: list[tuple[int, list[tuple[str, str]], bytes]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    """100 raising exports: the batch thread survives, exactly 100 internal errors are
    counted, later spans reach the receiver, and every response (status, headers, body)
    is identical to the same app with obskit disabled."""
    # One span per export and a short delay, so 100 faults take 100 exports.
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
    earlier = {t for t in threading.enumerate() if t.name.startswith("OtelBatch")}
    app = create_app(otlp_endpoint=http_receiver.endpoint, log_format="json", strict=False)
    guarded = obskit._lifecycle.runtime.current()._exporter
    assert guarded is not None
    # A mock of a fault (no real exporter raises on demand): the real OTLP exporter's
    # export() is wrapped to raise for its first 100 calls, then to run normally.
    real_export = guarded.exporter.export
    calls = {"raised": 0, "exported": 0}

    def raising_export(spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if calls["raised"] < FAULTS:
            calls["raised"] += 1
            raise RuntimeError("exporter exploded")
        calls["exported"] += 1
        return real_export(spans)

    monkeypatch.setattr(guarded.exporter, "export", raising_export)
    before = _internal_errors.internal_errors().get("export", 0)
    responses = _responses(app)
    obskit._lifecycle.runtime.current().force_flush(timeout=30)
    (batch_thread,) = [
        t for t in threading.enumerate() if t.name.startswith("OtelBatch") and t not in earlier
    ]
    late = _responses(app)  # after the faults: these spans must arrive
    obskit._lifecycle.runtime.current().force_flush(timeout=30)
    received = http_receiver.wait_for(2 * ROUNDS * SPANS_PER_ROUND - FAULTS)
    errors = _internal_errors.internal_errors().get("export", 0) - before
    print(
        f"scenario 4: {calls['raised']} raised, {errors} internal errors, "
        f"{calls['exported']} exports after, {len(received)} spans received"
    )
    assert calls["raised"] == FAULTS
    assert errors == FAULTS
    assert batch_thread.is_alive()
    assert responses == disabled_responses
    assert late == disabled_responses
    assert calls["exported"] > 0
    assert len(received) == calls["exported"] == 2 * ROUNDS * SPANS_PER_ROUND - FAULTS
    assert {span.name for span in received} >= {"GET /post/<int:post_id>", "GET /missing"}
