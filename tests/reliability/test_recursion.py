"""Scenario 13: with DEBUG logging bridged into obskit and the collector down, the
exporter's own log records never recurse, deadlock or create spans."""

from __future__ import annotations

import pytest

from tests.prometheus_server import free_port
from tests.servers import run_python

SCRIPT = """
import json, logging, sys, threading, time
import obskit
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

handle = obskit.init(
    service_name="recursion", otlp_endpoint="http://127.0.0.1:{port}", otlp_timeout=1,
    log_level="debug", log_format="json",
)
memory = InMemorySpanExporter()
handle.tracer_provider.add_span_processor(SimpleSpanProcessor(memory))
logging.getLogger("urllib3").setLevel(logging.DEBUG)
for round in range(5):
    for n in range(20):
        with trace.get_tracer("app").start_as_current_span(f"work-{{round}}-{{n}}"):
            logging.getLogger("app").debug("working", extra={{"n": n}})
    handle.force_flush(timeout=5)
names = {{span.name for span in memory.get_finished_spans()}}
print("SPANS", json.dumps(sorted({{name.split("-")[0] for name in names}})), file=sys.stderr)
obskit.shutdown(timeout=2)
"""


@pytest.mark.slow
def test_debug_logging_with_a_dead_collector_neither_recurses_nor_deadlocks() -> None:
    """Five failing export rounds with urllib3/OpenTelemetry DEBUG records flowing through
    obskit's bridge: the process ends (30 s watchdog), no RecursionError, and the only
    spans are the app's."""
    result = run_python(SCRIPT.format(port=free_port()), timeout=30)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RecursionError" not in result.stdout + result.stderr
    assert 'SPANS ["work"]' in result.stderr
    lines = result.stdout.splitlines()
    assert any('"logger": "urllib3' in line for line in lines)  # the bridge saw them
    assert any("Failed to export" in line for line in lines)
