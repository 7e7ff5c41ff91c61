"""The quickstart: obskit.init(), a few nested spans, printed by the console exporter.

Run it with ``python examples/quickstart.py``; no collector or other service is needed.
Set ``OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318`` to send the same spans to a
collector instead.
"""

from __future__ import annotations

import os
import time

from opentelemetry import trace

import obskit


def main() -> None:
    exporter = "otlp" if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else "console"
    telemetry = obskit.init(service_name="quickstart", traces_exporter=exporter)
    print(f"obskit initialised: {telemetry!r}")
    tracer = trace.get_tracer(__name__)
    with tracer.start_as_current_span("checkout", attributes={"cart.items": 3}) as span:
        with tracer.start_as_current_span("load-cart"):
            time.sleep(0.01)
        with tracer.start_as_current_span("charge-card"):
            time.sleep(0.02)
        trace_id = format(span.get_span_context().trace_id, "032x")
    obskit.shutdown()
    print(f"trace {trace_id}: 3 spans, printed as a tree on stderr")


if __name__ == "__main__":
    main()
