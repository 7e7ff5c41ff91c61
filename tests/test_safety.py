"""obskit's own failures never reach the app: exporter errors are contained and counted."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from obskit._lifecycle import internal_errors as _internal_errors
from obskit._traces.guarded_export import GuardedExporter


class FlakyExporter(SpanExporter):
    """Fault injection (nothing real raises on demand): fails ``failures`` times, then works."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.exported = 0
        self.shutdowns = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("collector exploded")
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.shutdowns += 1
        raise RuntimeError("shutdown exploded")

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        raise RuntimeError("flush exploded")


@pytest.fixture(autouse=True)
def _fresh_log_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_internal_errors, "_last_logged", {})


def test_exporter_errors_are_counted_and_logged_at_most_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """100 raising exports return FAILURE, count 100 errors, log one line; then spans flow."""
    caplog.set_level(logging.WARNING, logger="obskit")
    flaky = FlakyExporter(failures=100)
    guarded = GuardedExporter(flaky)
    before = _internal_errors.internal_errors().get("export", 0)
    results = [guarded.export([]) for _ in range(100)]
    assert set(results) == {SpanExportResult.FAILURE}
    assert _internal_errors.internal_errors()["export"] - before == 100
    assert len([r for r in caplog.records if "internal error in export" in r.getMessage()]) == 1
    assert guarded.export([]) is SpanExportResult.SUCCESS


def test_shutdown_is_once_and_contained() -> None:
    """shutdown() reaches the delegate once even if called twice, and never raises."""
    flaky = FlakyExporter(failures=0)
    guarded = GuardedExporter(flaky)
    guarded.shutdown()
    guarded.shutdown()
    assert flaky.shutdowns == 1
    assert guarded.export([]) is SpanExportResult.FAILURE
    assert guarded.force_flush() is False


def test_strict_mode_raises_internal_errors() -> None:
    """In strict mode (for test suites) the same internal error is raised, not swallowed."""
    _internal_errors.set_strict(True)
    try:
        with pytest.raises(RuntimeError, match="collector exploded"):
            GuardedExporter(FlakyExporter(failures=1)).export([])
    finally:
        _internal_errors.set_strict(False)
