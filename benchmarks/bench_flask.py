"""Cost per Flask request through the WSGI app (no network), hello-world route.

Cases, interleaved round by round in one process, each on its own app instance:

- bare Flask;
- OpenTelemetry's ``FlaskInstrumentor`` (spans, through the same SDK provider);
- ``prometheus-flask-exporter`` (RED metrics);
- both together: the hand-wired equivalent of what obskit does;
- obskit: ``instrument_flask`` (span + RED metrics with exemplars + access log line,
  written as JSON to /dev/null).

The instrumentors are optional (``pip install -e '.[bench]'``); absent ones are
skipped with a note. Run: ``python benchmarks/bench_flask.py [rounds] [requests]``.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask
from prometheus_client import CollectorRegistry

import obskit

RESULTS = Path(__file__).parent / "results"


def hello_app() -> Flask:
    app = Flask(f"bench{id(object())}")

    @app.get("/hello/<name>")
    def hello(name: str) -> str:
        return f"hello {name}"

    return app


def driver(app: Flask) -> Callable[[int], float]:
    base = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/hello/world",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }

    def start_response(status: str, headers: list[tuple[str, str]], *exc: Any) -> None:
        assert status.startswith("200")

    def run(requests: int) -> float:
        started = time.perf_counter()
        for _ in range(requests):
            environ = dict(base)
            environ["wsgi.input"] = io.BytesIO()
            body = app(environ, start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return (time.perf_counter() - started) / requests

    return run


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 11
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    obskit.init(service_name="bench", traces_exporter="none", log_format="json")
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
    devnull = open(os.devnull, "w")  # noqa: SIM115 - for the whole run
    real_stdout, sys.stdout = sys.stdout, devnull
    try:
        for case in cases.values():
            case(requests // 10)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, case in cases.items():
                samples[name].append(case(requests))
    finally:
        sys.stdout = real_stdout
    bare = statistics.median(samples["bare Flask"])
    rows = []
    for name, values in samples.items():
        median = statistics.median(values)
        rows.append(
            {
                "case": name,
                "median_us": round(median * 1e6, 2),
                "added_us": round((median - bare) * 1e6, 2),
                "min_us": round(min(values) * 1e6, 2),
                "max_us": round(max(values) * 1e6, 2),
            }
        )
    print(f"per request, {rounds} interleaved rounds x {requests} requests (medians)")
    print(f"{'case':<46} {'median us':>10} {'added us':>9} {'min-max us':>16}")
    for row in rows:
        spread = f"{row['min_us']:.0f}-{row['max_us']:.0f}"
        print(f"{row['case']:<46} {row['median_us']:>10.1f} {row['added_us']:>9.1f} {spread:>16}")
    for note in notes:
        print(f"note: {note}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "flask.json").write_text(json.dumps({"rows": rows, "notes": notes}, indent=2))
    obskit.shutdown()


if __name__ == "__main__":
    main()
