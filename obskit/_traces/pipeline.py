"""The tracing pipeline: sampler, span limits, exporter and processor from Settings.

``build_pipeline`` is pure: it returns a new SDK ``TracerProvider`` and touches no
global. The runtime installs it behind
:class:`~obskit._lifecycle.global_provider.SwitchableTracerProvider`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)

from obskit._config.settings import Settings
from obskit.exceptions import ConfigError

if TYPE_CHECKING:  # imported where an exporter is built: not with traces_exporter="none"
    from opentelemetry.sdk.trace.export import SpanExporter

    from obskit._traces.export_reasons import ReasonRecorder
    from obskit._traces.guarded_export import GuardedExporter

_DEFAULT_ENDPOINTS = {"http/protobuf": "http://localhost:4318", "grpc": "http://localhost:4317"}


def build_sampler(settings: Settings) -> Sampler:
    """The head sampler named by ``traces_sampler`` (``OTEL_TRACES_SAMPLER``)."""
    name = settings.traces_sampler
    root: Sampler
    base = name.removeprefix("parentbased_")
    if base == "always_on":
        root = ALWAYS_ON
    elif base == "always_off":
        root = ALWAYS_OFF
    else:
        root = TraceIdRatioBased(settings.traces_sampler_arg)
    return ParentBased(root) if name.startswith("parentbased_") else root


def traces_endpoint(settings: Settings) -> str:
    """The URL spans are sent to, following the OTLP exporter specification."""
    if settings.otlp_traces_endpoint:
        return settings.otlp_traces_endpoint
    base = settings.otlp_endpoint or _DEFAULT_ENDPOINTS[settings.otlp_protocol]
    if settings.otlp_protocol == "grpc":
        return base
    return base.rstrip("/") + "/v1/traces"


def build_exporter(
    settings: Settings, reasons: ReasonRecorder | None = None
) -> SpanExporter | None:
    """The span exporter for ``traces_exporter``, or ``None`` for ``none``.

    With ``reasons``, the OTLP exporter records why each attempt failed there.
    """
    exporter = settings.resolved_traces_exporter
    if exporter == "console":
        from obskit._traces.console_tree import ConsoleTreeExporter

        return ConsoleTreeExporter()
    if exporter == "none":
        return None
    from obskit._traces.export_reasons import record_grpc_outcomes, recording_session

    endpoint = traces_endpoint(settings)
    if settings.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        grpc_exporter: SpanExporter = GrpcExporter(
            endpoint=endpoint,
            insecure=endpoint.startswith("http://"),
            headers=dict(settings.otlp_headers),
            timeout=settings.otlp_timeout,
        )
        if reasons is not None:
            record_grpc_outcomes(grpc_exporter, reasons)
        return grpc_exporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    http_exporter: SpanExporter = HttpExporter(
        endpoint=endpoint,
        headers=dict(settings.otlp_headers),
        timeout=settings.otlp_timeout,
        session=recording_session(reasons) if reasons is not None else None,
    )
    return http_exporter


def build_pipeline(
    settings: Settings, resource: Resource
) -> tuple[TracerProvider, GuardedExporter | None]:
    """A new SDK tracer provider with the sampler, limits and exporter of ``settings``.

    Returns the provider and its (guarded) exporter, which ``shutdown()`` aborts when
    its deadline passes.

    The console exporter writes each span as it ends (a developer watches it); OTLP
    goes through a bounded batch queue on a background thread, so a slow collector
    never costs request latency.
    """
    provider = TracerProvider(
        sampler=build_sampler(settings),
        resource=resource,
        span_limits=_span_limits(settings),
        # obskit runs its own deadline-bounded shutdown at exit (see _runtime).
        shutdown_on_exit=False,
    )
    if settings.resolved_traces_exporter == "none":
        return provider, None
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from obskit._traces.console_tree import ConsoleTreeExporter
    from obskit._traces.export_reasons import ReasonRecorder
    from obskit._traces.guarded_export import CountingBatchSpanProcessor, GuardedExporter

    reasons = ReasonRecorder()
    exporter = build_exporter(settings, reasons)
    if exporter is None:
        return provider, None
    otlp = settings.resolved_traces_exporter == "otlp"
    guarded = GuardedExporter(exporter, _host_port(settings) if otlp else None, reasons)
    if isinstance(exporter, ConsoleTreeExporter):  # a developer watches it live
        provider.add_span_processor(SimpleSpanProcessor(guarded))
        return provider, guarded
    values = {k: v for k, v in os.environ.items() if k.startswith("OTEL_BSP_")}
    try:
        if values.get("OTEL_BSP_EXPORT_TIMEOUT", "").strip().startswith("-"):
            raise ValueError("OTEL_BSP_EXPORT_TIMEOUT must be a non-negative integer")
        processor = CountingBatchSpanProcessor(guarded)
    except ValueError as error:  # the SDK reads and checks OTEL_BSP_* itself
        names = ("SIZE", "BATCH_SIZE", "DELAY", "TIMEOUT")
        raise ConfigError(
            "OTEL_BSP_*",
            values,
            "env " + ", ".join(sorted(values)) if values else "defaults",
            str(error),
            f"see the batch span processor variables ({', '.join(names)})",
        ) from None
    provider.add_span_processor(processor)
    return provider, guarded


def _span_limits(settings: Settings) -> SpanLimits:
    """Span limits; the SDK also reads OTEL_*_LIMIT variables and rejects bad ones."""
    try:
        return SpanLimits(max_span_attribute_length=settings.attribute_value_length_limit)
    except ValueError as error:  # e.g. "OTEL_SPAN_EVENT_COUNT_LIMIT must be a non-negative ..."
        variable = str(error).split(" ", 1)[0]
        raise ConfigError(
            variable,
            os.environ.get(variable, ""),
            f"env {variable}",
            "a non-negative integer",
        ) from None


def build_propagator(settings: Settings) -> Any:
    """A composite text-map propagator for ``propagators`` (``OTEL_PROPAGATORS``)."""
    from importlib.metadata import entry_points

    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    chosen: list[Any] = []
    for name in settings.propagators:
        if name == "tracecontext":
            chosen.append(TraceContextTextMapPropagator())
        elif name == "baggage":
            chosen.append(W3CBaggagePropagator())
        elif name != "none":
            (entry,) = entry_points(group="opentelemetry_propagator", name=name)
            chosen.append(entry.load()())
    return CompositePropagator(chosen)


def _host_port(settings: Settings) -> tuple[str, int]:
    """The collector's TCP address, for the exporter's reachability probe."""
    import urllib.parse

    parts = urllib.parse.urlsplit(traces_endpoint(settings))
    default = 443 if parts.scheme == "https" else 80
    return parts.hostname or "localhost", parts.port or default
