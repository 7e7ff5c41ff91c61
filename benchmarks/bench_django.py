"""Cost per Django request through the WSGI handler (no network), one simple view.

Cases, interleaved round by round in one process, each a WSGIHandler built with its
own MIDDLEWARE list:

- bare Django (CommonMiddleware only);
- OpenTelemetry's ``DjangoInstrumentor`` middleware;
- ``django-prometheus``'s Before/After middleware pair;
- both together: the hand-wired equivalent;
- obskit: ``ObskitMiddleware`` (span + RED metrics with exemplars + access log line
  written as JSON to /dev/null).

Absent peers are skipped with a note (``pip install -e '.[bench]'`` in a separate
virtualenv). Run: ``python benchmarks/bench_django.py [rounds] [requests]``.
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

RESULTS = Path(__file__).parent / "results"

import django  # noqa: E402
from django.conf import settings  # noqa: E402

settings.configure(
    DEBUG=False,
    SECRET_KEY="bench",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["django.contrib.contenttypes"],
    MIDDLEWARE=[],
    DATABASES={},
    LOGGING_CONFIG=None,
)
django.setup()

from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402


def hello(request: HttpRequest, name: str) -> HttpResponse:
    return HttpResponse(f"hello {name}")


urlpatterns = [path("hello/<str:name>", hello)]


def handler(middleware: list[str]) -> Any:
    from django.core.handlers.wsgi import WSGIHandler
    from django.test.utils import override_settings

    with override_settings(MIDDLEWARE=middleware):
        return WSGIHandler()  # loads the middleware chain now


def driver(app: Any) -> Callable[[int], float]:
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
        assert status.startswith("200"), status

    def run(requests: int) -> float:
        started = time.perf_counter()
        for _ in range(requests):
            environ = dict(base)
            environ["wsgi.input"] = io.BytesIO()
            body = app(environ, start_response)
            for _chunk in body:
                pass
            body.close()
        return (time.perf_counter() - started) / requests

    return run


def main() -> None:
    import obskit

    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 11
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    obskit.init(service_name="bench", traces_exporter="none", log_format="json", db_spans=False)
    common = "django.middleware.common.CommonMiddleware"
    notes: list[str] = []
    cases: dict[str, Callable[[int], float]] = {"bare Django": driver(handler([common]))}
    otel: list[str] = []
    prom: list[tuple[str, str]] = []
    try:
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        DjangoInstrumentor().instrument()
        otel = ["opentelemetry.instrumentation.django.middleware.otel_middleware._DjangoMiddleware"]
    except ImportError:
        notes.append("opentelemetry-instrumentation-django not installed: its cases skipped")
    try:
        import django_prometheus  # noqa: F401

        prom = [
            (
                "django_prometheus.middleware.PrometheusBeforeMiddleware",
                "django_prometheus.middleware.PrometheusAfterMiddleware",
            )
        ]
    except ImportError:
        notes.append("django-prometheus not installed: its cases skipped")
    if otel:
        cases["OTel DjangoInstrumentor"] = driver(handler([*otel, common]))
    if prom:
        before, after = prom[0]
        cases["django-prometheus pair"] = driver(handler([before, common, after]))
    if otel and prom:
        before, after = prom[0]
        cases["hand-wired: OTel + django-prometheus"] = driver(
            handler([*otel, before, common, after])
        )
    cases["obskit ObskitMiddleware"] = driver(
        handler(["obskit.integrations.django.ObskitMiddleware", common])
    )
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
    bare = statistics.median(samples["bare Django"])
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
    (RESULTS / "django.json").write_text(json.dumps({"rows": rows, "notes": notes}, indent=2))
    obskit.shutdown()


if __name__ == "__main__":
    main()
