"""The app bench_e2e.py serves under gunicorn: a hello route, otherwise identical in
every case. ``OBSKIT_BENCH_INSTRUMENT`` picks what watches it:

- ``0``: nothing (bare Flask);
- ``1``: obskit (``init()`` + ``instrument_flask``); with ``OBSKIT_BENCH_EXPORT=1`` it
  exports its spans over OTLP (to ``OTEL_EXPORTER_OTLP_ENDPOINT``), else its spans go
  to the discarding sink below;
- ``floor``: the same per-request work wired by hand with the libraries obskit builds on
  (:func:`hand_wired`): what a team writes without obskit.

Where spans are not exported, obskit's and the floor's alike go through a
``BatchSpanProcessor`` to an exporter that drops them (``_floor.discard_spans``): both
pay what a deployment pays to end a span, neither pays for an export.
"""

from __future__ import annotations

import os
import time

from flask import Flask, Response, g, request


def create_app() -> Flask:
    app = Flask("e2e")

    @app.get("/hello/<name>")
    def hello(name: str) -> str:
        return f"hello {name}"

    mode = os.environ.get("OBSKIT_BENCH_INSTRUMENT")
    if mode == "1":
        import obskit

        if os.environ.get("OBSKIT_BENCH_EXPORT") == "1":
            obskit.init(service_name="e2e", log_format="json")  # OTLP to the endpoint set
        else:
            from _floor import discard_spans

            handle = obskit.init(service_name="e2e", traces_exporter="none", log_format="json")
            assert handle.tracer_provider is not None
            discard_spans(handle.tracer_provider)
        obskit.instrument_flask(app)
    elif mode == "floor":
        hand_wired(app)
    return app


def hand_wired(app: Flask) -> None:
    """A server span (W3C context continued), the RED histogram with a trace-id exemplar,
    the active-requests gauge, a JSON access line with the ids and a ``traceresponse``
    header, with OpenTelemetry's SDK, prometheus-client and structlog used directly
    through Flask's request hooks. Spans go to the discarding sink (as in the ``obskit``
    case)."""
    import structlog
    from _floor import add_trace_ids, discard_spans
    from opentelemetry import context, propagate, trace
    from opentelemetry.sdk.trace import TracerProvider
    from prometheus_client import Gauge, Histogram

    provider = TracerProvider()
    discard_spans(provider)
    tracer = provider.get_tracer("e2e")
    duration = Histogram(
        "http_server_request_duration_seconds",
        "Duration of HTTP server requests.",
        ["http_request_method", "http_route", "http_response_status_code"],
    )
    active = Gauge("http_server_active_requests", "Requests in flight.", ["http_request_method"])

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            add_trace_ids,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=True,
    )
    access = structlog.get_logger("access")

    @app.before_request
    def start() -> None:
        carrier = {"traceparent": request.headers.get("traceparent", "")}
        span = tracer.start_span(
            request.method,
            context=propagate.extract(carrier),
            kind=trace.SpanKind.SERVER,
            attributes={
                "http.request.method": request.method,
                "url.path": request.path,
                "url.scheme": request.scheme,
                "server.address": request.host.split(":")[0],
            },
        )
        g.obs = (span, context.attach(trace.set_span_in_context(span)), time.perf_counter())
        active.labels(request.method).inc()

    @app.after_request
    def finish(response: Response) -> Response:
        span, _, started = g.obs
        elapsed = time.perf_counter() - started
        route = request.url_rule.rule if request.url_rule else "<unmatched>"
        span.update_name(f"{request.method} {route}")
        span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", response.status_code)
        ids = span.get_span_context()
        trace_id, span_id = format(ids.trace_id, "032x"), format(ids.span_id, "016x")
        response.headers["traceresponse"] = f"00-{trace_id}-{span_id}-01"
        duration.labels(request.method, route, str(response.status_code)).observe(
            elapsed, exemplar={"trace_id": trace_id}
        )
        access.info(
            f"{request.method} {request.path} {response.status_code}",
            **{"http.route": route, "duration_ms": round(elapsed * 1000, 3)},
        )
        return response

    @app.teardown_request
    def end(error: BaseException | None) -> None:
        span, token, _ = g.pop("obs")
        active.labels(request.method).dec()
        span.end()
        context.detach(token)
