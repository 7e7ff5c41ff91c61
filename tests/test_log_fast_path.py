"""The inlined JSON log path renders exactly what the processor chains render."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest
import structlog
from opentelemetry import trace

import obskit
from obskit._logs import pipeline as _pipeline

# A fixed, valid span context: the same ids in both renderings.

TIMESTAMP = re.compile(r'"timestamp": "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z"')


class _Boom:
    def __str__(self) -> str:
        raise ValueError("no text")

    def __repr__(self) -> str:
        return "<Boom>"


BOOM = _Boom()


def _calls() -> list[Callable[[], None]]:
    """Log calls covering bound, contextvar, colliding, exception and extra fields."""
    log = obskit.get_logger("fast.path")
    bound = log.bind(order=7, nested={"a": [1, 2.5, None]})
    named = structlog.get_logger("fast.structlog")
    bridged = logging.getLogger("fast.bridged")

    def failing() -> None:
        try:
            raise KeyError("missing")
        except KeyError:
            log.exception("failed", attempt=2)
            bridged.exception("bridged failure", extra={"attempt": 2})

    return [
        lambda: log.info("plain"),
        lambda: log.info("args %s and %d", "x", 3),
        lambda: log.warning("kw", items=3, level="ignored", logger="override"),
        lambda: log.error("collides", timestamp="mine", trace_id="mine", **{"service.name": "x"}),
        lambda: bound.info("bound", order=8),
        lambda: log.info(None, only="kw"),
        lambda: log.info("hostile", value=BOOM, circle=[{1, 2}], key={(1, 2): 3}),
        lambda: log.info("stack", stack_info=False),
        lambda: named.info("structlog.get_logger", items=1),
        lambda: bridged.info("bridged %s", "arg", extra={"items": 3, "_private": 1}),
        lambda: bridged.warning("bridged plain"),
        lambda: bridged.info("big", extra={"blob": "x" * 40000}),
        failing,
    ]


def _render_all(fast: bool) -> list[str]:
    shared = _pipeline.pipeline()
    saved = shared.structlog_snapshot, shared.record_snapshot
    lines: list[str] = []
    inlined = [shared.fast_structlog(shared.structlog_chain), shared.render_record({}) is not None]
    assert inlined == [True, True]
    shared.writer.capture = lines
    if not fast:
        shared.structlog_snapshot = shared.record_snapshot = None
    try:
        structlog.contextvars.bind_contextvars(request_id="r-1", order=0)
        structlog.contextvars.bind_contextvars(gone=1)
        structlog.contextvars.unbind_contextvars("gone")
        span = trace.NonRecordingSpan(
            trace.SpanContext(trace_id=0xABC, span_id=0x12, is_remote=False)
        )
        for call in _calls():
            call()
            with trace.use_span(span):
                call()
    finally:
        structlog.contextvars.clear_contextvars()
        shared.writer.capture = None
        shared.structlog_snapshot, shared.record_snapshot = saved
    return [TIMESTAMP.sub('"timestamp": "T"', line) for line in lines]


@pytest.fixture
def initialised(spans: Callable[..., Any]) -> None:
    """obskit initialised with JSON logs, service fields and a small line cap."""
    spans(service_name="shop", service_version="2.1", log_max_line_bytes=4096)


def test_inlined_lines_equal_the_processor_chain_lines(initialised: None) -> None:
    """Every line (fields, order, values, ids, exceptions, truncation) is byte-identical."""
    slow = _render_all(fast=False)
    fast = _render_all(fast=True)
    assert len(fast) == len(slow) == 2 * (len(_calls()) + 1)
    assert (
        sum('"trace_id": "00000000000000000000000000000abc"' in line for line in fast)
        == len(fast) // 2
    )
    for fast_line, slow_line in zip(fast, slow, strict=True):
        # Stack traces name the frame they were rendered from; compare the rest.
        fast_event, slow_event = json.loads(fast_line), json.loads(slow_line)
        for event in (fast_event, slow_event):
            trace_text = event.pop("exception.stacktrace", "")
            assert "KeyError: 'missing'" in trace_text or not trace_text
        assert list(fast_event) == list(slow_event)
        assert fast_event == slow_event
        if "exception.type" not in fast_event:
            assert fast_line == slow_line
    assert any(json.loads(line).get("truncated") for line in fast)


def test_a_changed_chain_is_honoured(initialised: None) -> None:
    """A processor put into the chain after init() runs (the inlined path steps aside)."""
    shared = _pipeline.pipeline()

    def tag(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        event["tagged"] = True
        return event

    lines: list[str] = []
    shared.writer.capture = lines
    shared.structlog_chain.insert(0, tag)
    shared.record_chain.insert(0, tag)
    try:
        obskit.get_logger("fast.path").info("one")
        logging.getLogger("fast.bridged").warning("two")
    finally:
        shared.structlog_chain.remove(tag)
        shared.record_chain.remove(tag)
        shared.writer.capture = None
    assert [json.loads(line).get("tagged") for line in lines] == [True, True]


@pytest.mark.parametrize(
    "nanoseconds",
    [
        1_764_331_200_000_000_000,  # a whole second: no fraction, as isoformat() writes it
        1_764_331_200_000_001_000,
        1_764_331_200_123_456_789,  # nanoseconds are cut to microseconds, not rounded
        1_764_331_200_999_999_999,
        1_764_331_201_500_000_000,  # the next second after a cached one
        0,
    ],
)
def test_timestamps_are_structlogs_iso_utc_format(
    nanoseconds: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inlined timestamp is what TimeStamper(fmt="iso", utc=True) writes for that instant."""
    import datetime

    second, micro = divmod(nanoseconds // 1000, 1_000_000)
    moment = datetime.datetime.fromtimestamp(second, datetime.timezone.utc)
    expected = moment.replace(microsecond=micro).isoformat().replace("+00:00", "Z")
    monkeypatch.setattr(_pipeline.time, "time_ns", lambda: nanoseconds)
    assert _pipeline._utc_now_iso() == expected
    assert _pipeline._utc_now_iso() == expected  # again, from the per-second cache
