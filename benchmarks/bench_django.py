"""Cost per Django request through the WSGI handler (no network), one simple view.

Cases, interleaved round by round in one process, each a WSGIHandler built with its
own MIDDLEWARE list:

- bare Django (CommonMiddleware only);
- OpenTelemetry's ``DjangoInstrumentor`` middleware;
- ``django-prometheus``'s Before/After middleware pair;
- both together: the hand-wired equivalent;
- obskit: ``ObskitMiddleware`` (span + RED metrics with exemplars + access log line
  written as JSON to /dev/null).

The instrumentor's spans and obskit's come from the same provider (obskit's, which
OpenTelemetry's global API hands out), whose ended spans go through a
``BatchSpanProcessor`` to an exporter that drops them (``_floor.discard_spans``): both
pay what a deployment pays to end a span, neither pays for an export.

Absent peers are skipped with a note (``pip install -e '.[bench]'`` in a separate
virtualenv). Run: ``python benchmarks/bench_django.py [rounds] [requests]``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import django
from django.conf import settings

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

sys.path.insert(0, str(Path(__file__).parent))
from _floor import discard_spans  # noqa: E402
from _per_request import driver, measure_and_report  # noqa: E402


def hello(request: HttpRequest, name: str) -> HttpResponse:
    return HttpResponse(f"hello {name}")


urlpatterns = [path("hello/<str:name>", hello)]


def handler(middleware: list[str]) -> Any:
    from django.core.handlers.wsgi import WSGIHandler
    from django.test.utils import override_settings

    with override_settings(MIDDLEWARE=middleware):
        return WSGIHandler()  # loads the middleware chain now


def main() -> None:
    import obskit

    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 11
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    handle = obskit.init(
        service_name="bench", traces_exporter="none", log_format="json", db_spans=False
    )
    assert handle.tracer_provider is not None
    discard_spans(handle.tracer_provider)  # the instrumentor's spans come from it too
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
    measure_and_report(cases, "bare Django", rounds, requests, notes, "django")
    obskit.shutdown()


if __name__ == "__main__":
    main()
