"""Cost per log line inside an active span, rendered as JSON to /dev/null.

Cases, interleaved round by round in one process so drift hits each alike:

- stdlib plain line: ``logging.Logger.info("msg %s", x)`` through a StreamHandler
  to /dev/null with ``Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")``
  -- the floor the #10 targets are stated against (obskit <= 1.2x, bridge <= 2.0x);
- floor: a hand-written structlog pipeline with the same fields (timestamp, level,
  logger, trace/span ids from ``get_current_span()``, service name, JSONRenderer,
  WriteLogger to /dev/null, filtering bound logger);
- obskit: ``obskit.get_logger(...).info(...)`` after ``obskit.init()``;
- obskit via logging: a stdlib ``logging`` record through obskit's bridge;
- stdlib + python-json-logger + OpenTelemetry's logging instrumentation (skipped
  with a note when those packages are absent: ``pip install -e '.[bench]'``).

Run: ``python benchmarks/bench_logs.py [rounds] [calls]``.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import structlog
from opentelemetry import trace

import obskit

sys.path.insert(0, str(Path(__file__).parent))
from _floor import add_trace_ids
from _rounds import Case, interleaved, timed

PLAIN = "stdlib plain line (logging.Formatter)"


def floor_logger(devnull: Any) -> Any:
    def service(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        event["service.name"] = "bench"
        return event

    return structlog.wrap_logger(
        structlog.WriteLogger(devnull),
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            add_trace_ids,
            service,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        context_class=dict,
    ).bind(logger="bench.floor")


def stdlib_plain_logger(devnull: Any) -> logging.Logger:
    handler = logging.StreamHandler(devnull)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("bench.plain")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def stdlib_json_logger(devnull: Any) -> logging.Logger | None:
    try:
        from pythonjsonlogger.json import JsonFormatter
    except ImportError:
        return None
    handler = logging.StreamHandler(devnull)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(otelTraceID)s %(otelSpanID)s "
            "%(otelServiceName)s"
        )
    )
    logger = logging.getLogger("bench.stdlib")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def instrumented(case: Case) -> Case | None:
    """``case`` with OpenTelemetry's logging instrumentation on while it runs only.

    The instrumentation replaces the process-wide LogRecord factory (adding four
    ``otel*`` attributes to every record); left on, it would tax -- and add fields
    to -- every other stdlib case too.
    """
    try:
        from opentelemetry.instrumentation.logging import LoggingInstrumentor
    except ImportError:
        return None
    instrumentor = LoggingInstrumentor()

    def run(calls: int) -> float:
        instrumentor.instrument(set_logging_format=False)
        try:
            return case(calls)
        finally:
            instrumentor.uninstrument()

    return run


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    devnull = open(os.devnull, "w")  # noqa: SIM115 - kept open for the whole run
    real_stdout = sys.stdout
    obskit.init(service_name="bench", log_format="json", traces_exporter="none")
    floor = floor_logger(devnull)
    ours = obskit.get_logger("bench.obskit")
    bridged = logging.getLogger("bench.bridged")
    plain = stdlib_plain_logger(devnull)
    stdlib = stdlib_json_logger(devnull)
    cases: dict[str, Case] = {
        PLAIN: timed(lambda: plain.info("order placed %s", 3)),
        "floor: hand-written structlog": timed(lambda: floor.info("order placed", items=3)),
        "obskit.get_logger().info": timed(lambda: ours.info("order placed", items=3)),
        "logging via obskit bridge": timed(
            lambda: bridged.info("order placed", extra={"items": 3})
        ),
    }
    json_case = (
        instrumented(timed(lambda: stdlib.info("order placed", extra={"items": 3})))
        if stdlib is not None
        else None
    )
    if json_case is not None:
        cases["stdlib + python-json-logger + otel"] = json_case
    samples: dict[str, list[float]] = {}
    tracer = trace.get_tracer("bench")
    sys.stdout = devnull  # obskit writes to sys.stdout; send it where the floor writes
    try:
        with tracer.start_as_current_span("request"):
            samples = interleaved(cases, rounds, calls)
    finally:
        sys.stdout = real_stdout
    floor_median = statistics.median(samples["floor: hand-written structlog"])
    plain_median = statistics.median(samples[PLAIN])
    print(f"per log line inside a span, {rounds} rounds x {calls} calls, JSON to /dev/null")
    print(f"{'case':<40} {'median us':>10} {'min-max us':>14} {'x floor':>8} {'x plain':>8}")
    for name, values in samples.items():
        median = statistics.median(values)
        spread = f"{min(values) * 1e6:.2f}-{max(values) * 1e6:.2f}"
        print(
            f"{name:<40} {median * 1e6:>10.2f} {spread:>14} {median / floor_median:>8.2f}"
            f" {median / plain_median:>8.2f}"
        )
    print("targets (#10): obskit.get_logger().info <= 1.2x plain; bridge <= 2.0x plain")
    if json_case is None:
        print("note: python-json-logger / opentelemetry-instrumentation-logging not installed;")
        print("      pip install -e '.[bench]' to include the stdlib case")
    rows = [
        {
            "case": name,
            "median_us": round(statistics.median(values) * 1e6, 3),
            "min_us": round(min(values) * 1e6, 3),
            "max_us": round(max(values) * 1e6, 3),
            "x_floor": round(statistics.median(values) / floor_median, 3),
            "x_stdlib_plain": round(statistics.median(values) / plain_median, 3),
        }
        for name, values in samples.items()
    ]
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "logs.json").write_text(json.dumps({"rows": rows}, indent=2))
    obskit.shutdown()


if __name__ == "__main__":
    main()
