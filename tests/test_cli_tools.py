"""`obskit demo` and `obskit doctor`, run as a user runs them: as subprocesses."""

from __future__ import annotations

import re
import time

import pytest

from tests.prometheus_server import free_port
from tests.receivers import OtlpHttpReceiver
from tests.servers import run_python
from tests.terminal import run_obskit, run_on_terminal


def _check_demo_output(out: str) -> None:
    checkout, failing, slow = re.findall(r"^trace ([0-9a-f]{32}) ", out, re.M)
    trace_id = checkout
    assert re.search(rf'"trace_id": "{trace_id}"', out), "no log line with the trace id"
    exemplars = re.findall(
        r'_bucket\{.*\} \S+ # \{span_id="[0-9a-f]{16}",trace_id="([0-9a-f]{32})"\}', out
    )
    assert trace_id in exemplars, "no histogram exemplar with the trace id"
    assert "POST /orders/<int:order_id>/pay" in out
    assert re.search(rf"^trace {failing} .* 1 error$", out, re.M)  # the failing request
    # The slow request: the watchdog's line while it ran, and its span's hot frame.
    slow_part = out[out.index(f"trace {slow} ") :]
    assert re.search(r"warning  stuck span  span.name=compute-report  running_ms=\d+", slow_part)
    assert re.search(r"in build_report\n", slow_part)
    assert re.search(r"^     build_report \(.*demo\.py:\d+\) \d+ samples$", slow_part, re.M)
    assert "\x1b[" not in out  # not a terminal: plain text


@pytest.mark.slow
@pytest.mark.parametrize("flask", [True, False], ids=["flask", "stdlib-wsgi"])
def test_demo_shows_one_requests_trace_logs_and_exemplar(flask: bool) -> None:
    """`obskit demo` exits 0; its waterfall's trace id is in a log line and in an
    exemplar of the printed metrics (with Flask, and with the base install only)."""
    code = "import sys\n"
    if not flask:
        code += "sys.modules['flask'] = None  # as if Flask were not installed\n"
    code += "from obskit.cli import main\nsys.exit(main(['demo']))\n"
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    _check_demo_output(result.stdout)
    assert ("served by Flask" in result.stdout) is flask


@pytest.mark.slow
def test_doctor_passes_against_a_listening_collector(http_receiver: OtlpHttpReceiver) -> None:
    """With a collector up: every check passes (the metrics one over the /metrics port),
    exit 0, and the test span arrived."""
    port = free_port()
    result = run_obskit(
        ["doctor"],
        OTEL_EXPORTER_OTLP_ENDPOINT=http_receiver.endpoint,
        OBSKIT_LOG_FORMAT="json",
        OBSKIT_METRICS_PORT=str(port),
        OBSKIT_METRICS_ADDR="127.0.0.1",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"✓ traces: the span was accepted by {http_receiver.endpoint}/v1/traces" in result.stdout
    assert "✓ logs:" in result.stdout
    assert f"✓ metrics: http://127.0.0.1:{port}/metrics exposes the exemplar" in result.stdout
    assert [span.name for span in http_receiver.wait_for(1)] == ["obskit.doctor"]


def test_doctor_says_connection_refused_at_once_for_a_closed_port() -> None:
    """With nothing listening on the endpoint's port: exit 1 with "connection refused"
    and the fix, well before the export timeout (10 s) would run out; the first line
    is the report's, not a log line."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run_obskit(["doctor"], OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OBSKIT_METRICS_PORT="0")
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr
    assert elapsed < 8, elapsed  # a functional bound: the export timeout is 10 s
    port = endpoint.rsplit(":", 1)[1]
    assert (
        f"✗ traces: {endpoint}/v1/traces: connection refused (nothing listens on"
        f" 127.0.0.1:{port})" in result.stdout
    )
    assert "fix: start a collector there, or fix OTEL_EXPORTER_OTLP_ENDPOINT" in result.stdout
    assert "1 check(s) failed" in result.stdout
    assert result.stdout.startswith("✓ configuration: ")
    assert "{" not in result.stdout  # no JSON log line among the report's


@pytest.mark.slow
def test_doctor_reports_an_endpoint_that_refuses_the_span(
    http_receiver: OtlpHttpReceiver,
) -> None:
    """A listening endpoint that answers 404: it says what it waits for, then that the
    span was not accepted, with the exporter's reason and the fix; exit 1."""
    endpoint = f"{http_receiver.endpoint}/wrong/path"
    result = run_obskit(
        ["doctor"],
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=endpoint,
        OBSKIT_OTLP_TIMEOUT="2",
        OBSKIT_METRICS_PORT="0",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"… traces: sending a test span to {endpoint} (waiting up to 4 s)" in result.stdout
    assert f"✗ traces: {endpoint} did not accept the span: " in result.stdout
    assert "1 check(s) failed" in result.stdout


@pytest.mark.slow
def test_doctor_on_a_terminal_passes_with_its_progress_replaced() -> None:
    """On a terminal (where logs are coloured console text by default) every check
    passes, the progress line is replaced by the result, and no log line shows."""
    receiver = OtlpHttpReceiver()
    try:
        code, out = run_on_terminal(
            ["obskit", "doctor"],
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OBSKIT_METRICS_PORT": str(free_port()),
                "OBSKIT_METRICS_ADDR": "127.0.0.1",
            },
            columns=120,
        )
    finally:
        receiver.close()
    assert code == 0, out
    assert "✓ logs: the log line is JSON and carries the span's trace_id" in out
    assert f"\r\x1b[K✓ traces: the span was accepted by {receiver.endpoint}/v1/traces" in out
    assert "all checks passed" in out
    assert "obskit doctor test line" not in out


def test_doctor_reports_bad_configuration_with_exit_2() -> None:
    """A bad setting: exit 2 and the ConfigError message."""
    result = run_obskit(["doctor"], OTEL_TRACES_SAMPLER="sometimes", OBSKIT_METRICS_PORT="0")
    assert result.returncode == 2
    assert "traces_sampler='sometimes'" in result.stdout
