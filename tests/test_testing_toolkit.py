"""obskit.testing.capture() and the obskit_capture pytest fixture, used as a user would."""

from __future__ import annotations

import textwrap

import pytest
from opentelemetry.trace import StatusCode

import obskit
from obskit.testing import capture


def test_capture_records_spans_logs_and_metrics_with_sequential_ids() -> None:
    """Spans with ids 1, 2, ...; parsed log lines; metric values, increases, exemplars."""

    @obskit.traced
    def charge() -> None:
        obskit.get_logger("shop").info("charged", amount=5)

    orders = obskit.counter("orders_total", "Orders.", ["status"])
    with capture() as telemetry, obskit.span("checkout") as checkout:
        charge()
        orders.labels("ok").inc()
    root = telemetry.span("checkout")
    (child,) = telemetry.children(root)
    assert child.name.endswith(".charge")
    assert checkout.get_span_context().trace_id == 1
    assert telemetry.trace_id(root) == f"{1:032x}"
    (line,) = telemetry.logs
    assert line["event"] == "charged"
    assert line["timestamp"] == "2000-01-01T00:00:00.000001Z"
    assert line["trace_id"] == telemetry.trace_id(root)
    assert line["span_id"] == f"{child.context.span_id:016x}"  # type: ignore[union-attr]
    assert telemetry.metrics.increase("orders_total", status="ok") == 1
    exemplars = telemetry.metrics.exemplars("obskit_function_duration_seconds_bucket", outcome="ok")
    assert [e["trace_id"] for e in exemplars] == [telemetry.trace_id(root)]
    assert "orders_total" in telemetry.metrics.text()


def test_capture_span_lookup_explains_what_is_missing() -> None:
    """span(name) fails with the list of recorded span names."""
    with capture() as telemetry, obskit.span("present"):
        pass
    with pytest.raises(
        AssertionError, match=r"expected one span 'absent', found 0; spans: \['present'\]"
    ):
        telemetry.span("absent")


USER_TESTS = """
import obskit
import pytest
from obskit._logs import pipeline as _pipeline


@obskit.traced
def place_order(fail: bool) -> None:
    obskit.get_logger("shop").error("order failed") if fail else None
    if fail:
        raise ValueError("no stock")


def test_span_child_log_and_histogram(obskit_capture):
    with obskit.span("POST /checkout"):
        with pytest.raises(ValueError):
            place_order(True)
    request = obskit_capture.span("POST /checkout")
    (order,) = obskit_capture.children(request)
    assert order.status.status_code.name == "ERROR"
    (line,) = obskit_capture.logs
    assert line["level"] == "error"
    assert line["trace_id"] == obskit_capture.trace_id(request)
    name = "obskit_function_duration_seconds_count"
    assert obskit_capture.metrics.increase(name, outcome="error") == 1


def test_wrong_expectation_fails(obskit_capture):
    with obskit.span("real"):
        pass
    obskit_capture.span("imagined")


def test_internal_error_fails_in_strict_mode(obskit_capture, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("obskit internal bug")

    monkeypatch.setattr(_pipeline, "render_json", broken)
    obskit.get_logger("shop").info("this line cannot render")


def test_not_strict_swallows_internal_errors(monkeypatch):
    from obskit.testing import capture

    def broken(*args, **kwargs):
        raise RuntimeError("obskit internal bug")

    with capture(strict=False) as telemetry:
        monkeypatch.setattr(_pipeline, "render_json", broken)
        obskit.get_logger("shop").info("dropped, not raised")
    assert telemetry.logs == []
"""


@pytest.mark.slow
def test_pytest_plugin_fixture_in_a_user_project(pytester: pytest.Pytester) -> None:
    """A user's test file using the obskit_capture fixture: real assertions pass, a wrong
    expectation fails, and an injected internal error fails the test in strict mode."""
    pytester.makepyfile(test_user=textwrap.dedent(USER_TESTS))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=2, failed=2)
    output = result.stdout.str()
    assert "test_wrong_expectation_fails" in output
    assert "expected one span 'imagined', found 0" in output
    assert "test_internal_error_fails_in_strict_mode" in output
    assert "obskit internal bug" in output
    assert "StatusCode" not in output or StatusCode.ERROR.name == "ERROR"
