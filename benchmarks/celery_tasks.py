"""The Celery app bench_celery.py runs: one small task, sent by a producer process and run
by a real worker (prefork, one child), the same in every case. ``CASE`` picks what
watches both sides:

- ``bare``: nothing;
- ``otel``: OpenTelemetry's ``CeleryInstrumentor`` with an SDK tracer provider;
- ``obskit``: ``obskit.init()`` (Celery switched on by it), its metrics in a
  multiprocess directory as a prefork worker's are (``PROMETHEUS_MULTIPROC_DIR``).

Spans of both instrumented cases go through a ``BatchSpanProcessor`` to an exporter that
drops them (``_floor.discard_spans``): each pays what a deployment pays to end a span,
neither pays for an export. Logs at WARNING in every case (no line per task).

As a producer (``python celery_tasks.py``) it reads a count per line on stdin, sends that
many tasks and prints one JSON line: the CPU seconds the sending took in this process
and the wall seconds until the last task's result came back. Only the last task stores
a result: the worker runs them in order (one child, one queue), so its result means
every task ran, and the result backend's cost per task stays out of the figures.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from celery import Celery, signals

sys.path.insert(0, str(Path(__file__).parent))
from _floor import discard_spans

CASE = os.environ["CASE"]
QUEUE = os.environ.get("QUEUE") or f"bench-{CASE}"

if CASE == "otel":
    from opentelemetry import trace
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    discard_spans(provider)
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument()
elif CASE == "obskit":
    import obskit
    from obskit._lifecycle import runtime

    obskit.init(service_name="bench", traces_exporter="none", log_level="warning", metrics_port=0)

    def _discard_here(**_: object) -> None:
        """The current pipeline (rebuilt in each forked child) drops its spans."""
        handle = runtime.current()
        assert handle is not None
        assert handle.tracer_provider is not None
        discard_spans(handle.tracer_provider)

    _discard_here()
    signals.worker_process_init.connect(_discard_here, weak=False)

app = Celery("celery_tasks", broker=os.environ["BROKER"], backend=os.environ["BROKER"])
app.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
)


@app.task
def add(x: int, y: int) -> int:
    return x + y


def produce() -> None:
    """Answer each count read from stdin with one JSON line (see the module docstring)."""
    for line in sys.stdin:
        count = int(line)
        started_wall = time.perf_counter()
        started_cpu = time.process_time()
        for n in range(count - 1):
            add.apply_async((n, n), ignore_result=True)
        last = add.apply_async((count, count))
        sending_cpu = time.process_time() - started_cpu
        last.get(timeout=120)
        wall = time.perf_counter() - started_wall
        print(json.dumps({"sending_cpu": sending_cpu, "wall": wall}), flush=True)


if __name__ == "__main__":
    produce()
