"""The chains' inlined equivalents step aside when a chain changes; the timestamp format.

That the inlined lines equal the chains' byte for byte is tested beside the accelerator
that renders them: ``tests/fast/test_log_lines.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

import obskit
from obskit._logs import pipeline as _pipeline
from obskit._logs import processors


@pytest.fixture
def initialised(spans: Callable[..., Any]) -> None:
    """obskit initialised with JSON logs, service fields and a small line cap."""
    spans(service_name="shop", service_version="2.1", log_max_line_bytes=4096)


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
    """The timestamp is what structlog's TimeStamper(fmt="iso", utc=True) writes for that
    instant, ``isoformat()`` with ``Z`` (microseconds; none at a whole second)."""
    import datetime

    second, micro = divmod(nanoseconds // 1000, 1_000_000)
    moment = datetime.datetime.fromtimestamp(second, datetime.timezone.utc)
    expected = moment.replace(microsecond=micro).isoformat().replace("+00:00", "Z")
    monkeypatch.setattr(processors.time, "time_ns", lambda: nanoseconds)
    assert processors.utc_now_iso() == expected
    assert processors.utc_now_iso() == expected  # again, from the per-second cache
