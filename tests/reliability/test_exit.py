"""Scenario 12 (interpreter exit): a plain script that ends without calling shutdown()
delivers its buffered spans, and with the collector a black hole it still exits
within ``shutdown_timeout`` plus a small margin."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.receivers import BlackHole, OtlpHttpReceiver
from tests.servers import run_python

ROOT = Path(__file__).resolve().parents[2]
SPANS = 500
SHUTDOWN_TIMEOUT = 2.0

SCRIPT = """
import time
import obskit
from opentelemetry import trace

obskit.init(service_name="exit-script")
tracer = trace.get_tracer("script")
for n in range({spans}):
    with tracer.start_as_current_span(f"span-{{n}}"):
        pass
print(time.time(), flush=True)  # the script's last statement: exit starts here
"""


def _run_script(env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run SCRIPT; return the result and the seconds from its last statement to its end."""
    # Without coverage in the script: its data save at exit would be timed too.
    result = run_python(
        SCRIPT.format(spans=SPANS), {"OBSKIT_LOG_FORMAT": "json", **env}, coverage=False
    )
    ended = time.time()
    last_statement = float(result.stdout.split()[0])
    return result, ended - last_statement


def test_buffered_spans_are_delivered_at_interpreter_exit(
    http_receiver: OtlpHttpReceiver,
) -> None:
    """500 spans still in the batch queue when the script ends all reach the collector."""
    result, exit_seconds = _run_script({"OTEL_EXPORTER_OTLP_ENDPOINT": http_receiver.endpoint})
    assert result.returncode == 0, result.stderr
    received = http_receiver.wait_for(SPANS)
    print(f"scenario 12: {len(received)} spans delivered at exit in {exit_seconds:.2f} s")
    assert sorted(span.name for span in received) == sorted(f"span-{n}" for n in range(SPANS))


@pytest.mark.slow
def test_exit_with_a_black_hole_collector_takes_at_most_the_shutdown_timeout(
    black_hole: BlackHole,
) -> None:
    """A collector that never answers holds interpreter exit for at most
    shutdown_timeout (+1.5 s over a script without export), although the export
    timeout is 30 s."""
    # The interpreter's own exit (and coverage, when measured) as the reference.
    _, reference_seconds = _run_script({"OBSKIT_TRACES_EXPORTER": "none"})
    result, exit_seconds = _run_script(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": black_hole.endpoint,
            "OTEL_EXPORTER_OTLP_TIMEOUT": "30000",
            "OBSKIT_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
        }
    )
    print(
        f"scenario 12: exit took {exit_seconds:.2f} s with the collector a black hole, "
        f"{reference_seconds:.2f} s without export"
    )
    assert result.returncode == 0, result.stderr
    # obskit's exit handler returns at the timeout (2.02 s measured); the interpreter's
    # teardown after it takes ~1 s more here than without export (not obskit code).
    assert exit_seconds <= SHUTDOWN_TIMEOUT + reference_seconds + 1.5
