"""Cost per Flask request through the WSGI app (no network), hello-world route.

Cases, interleaved round by round in one process, each on its own app instance:

- bare Flask;
- OpenTelemetry's ``FlaskInstrumentor`` (spans, through the same SDK provider);
- ``prometheus-flask-exporter`` (RED metrics);
- both together: the hand-wired equivalent of what obskit does;
- obskit: ``instrument_flask`` (span + RED metrics with exemplars + access log line,
  written as JSON to /dev/null).

The instrumentor's spans and obskit's come from the same provider (obskit's, which
OpenTelemetry's global API hands out), whose ended spans go through a
``BatchSpanProcessor`` to an exporter that drops them (``_floor.discard_spans``): both
pay what a deployment pays to end a span, neither pays for an export.

The instrumentors are optional (``pip install -e '.[bench]'``); absent ones are
skipped with a note. Run: ``python benchmarks/bench_flask.py [rounds] [requests]``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from flask import Flask
from prometheus_client import CollectorRegistry

import obskit

sys.path.insert(0, str(Path(__file__).parent))
from _floor import discard_spans
from _per_request import driver, measure_and_report


def hello_app() -> Flask:
    app = Flask(f"bench{id(object())}")

    @app.get("/hello/<name>")
    def hello(name: str) -> str:
        return f"hello {name}"

    return app


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 11
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    handle = obskit.init(service_name="bench", traces_exporter="none", log_format="json")
    assert handle.tracer_provider is not None
    discard_spans(handle.tracer_provider)  # the instrumentor's spans come from it too
    notes: list[str] = []
    cases: dict[str, Callable[[int], float]] = {"bare Flask": driver(hello_app())}
    otel_app = prom_app = both_app = None
    try:
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        otel_app, both_app = hello_app(), hello_app()
        FlaskInstrumentor().instrument_app(otel_app)
        FlaskInstrumentor().instrument_app(both_app)
    except ImportError:
        notes.append("opentelemetry-instrumentation-flask not installed: its cases skipped")
    try:
        from prometheus_flask_exporter import PrometheusMetrics

        prom_app = hello_app()
        PrometheusMetrics(prom_app, registry=CollectorRegistry())
        if both_app is not None:
            PrometheusMetrics(both_app, registry=CollectorRegistry())
    except ImportError:
        notes.append("prometheus-flask-exporter not installed: its cases skipped")
        both_app = None
    if otel_app is not None:
        cases["OTel FlaskInstrumentor"] = driver(otel_app)
    if prom_app is not None:
        cases["prometheus-flask-exporter"] = driver(prom_app)
    if both_app is not None:
        cases["hand-wired: OTel + prometheus-flask-exporter"] = driver(both_app)
    cases["obskit.instrument_flask"] = driver(obskit.instrument_flask(hello_app()))
    measure_and_report(cases, "bare Flask", rounds, requests, notes, "flask")
    obskit.shutdown()


if __name__ == "__main__":
    main()
