"""`obskit demo` and `obskit doctor`, run as a user runs them: as subprocesses."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from tests.prometheus_server import free_port
from tests.receivers import OtlpHttpReceiver
from tests.servers import ROOT, clean_env, run_python


def _check_demo_output(out: str) -> None:
    (trace_id,) = re.findall(r"^trace ([0-9a-f]{32}) ", out, re.M)
    assert re.search(rf'"trace_id": "{trace_id}"', out), "no log line with the trace id"
    exemplars = re.findall(
        r'_bucket\{.*\} \S+ # \{span_id="[0-9a-f]{16}",trace_id="([0-9a-f]{32})"\}', out
    )
    assert trace_id in exemplars, "no histogram exemplar with the trace id"
    assert "POST /orders/<int:order_id>/pay" in out
    assert "\x1b[" not in out  # not a terminal: plain text


@pytest.mark.slow
@pytest.mark.parametrize("flask", [True, False], ids=["flask", "stdlib-wsgi"])
def test_demo_shows_one_requests_trace_logs_and_exemplar(flask: bool) -> None:
    """`obskit demo` exits 0 within 20 s; its waterfall's trace id is in a log line and
    in an exemplar of the printed metrics (with Flask, and with the base install only)."""
    code = "import sys\n"
    if not flask:
        code += "sys.modules['flask'] = None  # as if Flask were not installed\n"
    code += "from obskit.cli import main\nsys.exit(main(['demo']))\n"
    started = time.monotonic()
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 20
    _check_demo_output(result.stdout)
    assert ("Flask on" in result.stdout) is flask


@pytest.mark.slow
def test_doctor_passes_against_a_listening_collector(http_receiver: OtlpHttpReceiver) -> None:
    """With a collector up: every check passes, exit 0, and the test span arrived."""
    result = subprocess.run(
        [sys.executable, "-m", "obskit", "doctor"],
        cwd=ROOT,
        env=clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=http_receiver.endpoint, OBSKIT_LOG_FORMAT="json"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"✓ traces: the span was accepted by {http_receiver.endpoint}/v1/traces" in result.stdout
    assert "✓ logs:" in result.stdout
    assert "✓ metrics:" in result.stdout
    assert [span.name for span in http_receiver.wait_for(1)] == ["obskit.doctor"]


@pytest.mark.slow
def test_doctor_fails_with_a_hint_when_the_collector_is_down() -> None:
    """With nothing listening: exit 1, the traces check fails with the error and a fix."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "obskit", "doctor"],
        cwd=ROOT,
        env=clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OBSKIT_OTLP_TIMEOUT="2"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"✗ traces: {endpoint}/v1/traces did not accept the span" in result.stdout
    assert "fix: start a collector there, or fix OTEL_EXPORTER_OTLP_ENDPOINT" in result.stdout
    assert "1 check(s) failed" in result.stdout


def test_doctor_reports_bad_configuration_with_exit_2() -> None:
    """A bad setting: exit 2 and the ConfigError message."""
    result = subprocess.run(
        [sys.executable, "-m", "obskit", "doctor"],
        cwd=ROOT,
        env=clean_env(OTEL_TRACES_SAMPLER="sometimes"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "traces_sampler='sometimes'" in result.stdout
