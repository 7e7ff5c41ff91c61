"""The tracing pipeline: sampler, span limits, exporter and processor from Settings.

``build_pipeline`` is pure: it returns a new SDK ``TracerProvider`` and touches no
global. The runtime installs it behind
:class:`~obskit._lifecycle.global_provider.SwitchableTracerProvider`.

Every value the SDK or the OTLP exporter would otherwise read from the environment on
its own (span limits, ``OTEL_BSP_*``, compression, certificates) is passed to it
explicitly, as :func:`~obskit._config.settings.load` checked it: whatever the SDK
version, nothing here raises for a bad variable or reads one behind obskit's back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)

from obskit._config.otel_env import DEFAULT_COUNT_LIMIT, OtelEnv
from obskit._config.settings import Settings
from obskit._traces.ids import OsRandomIdGenerator
from obskit.exceptions import ConfigError

if TYPE_CHECKING:  # imported where an exporter is built: not with traces_exporter="none"
    import grpc
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
    env = settings.otel_env
    if settings.otlp_protocol == "grpc":
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        # The scheme decides, as the specification says (OTEL_EXPORTER_OTLP_INSECURE
        # applies only to an endpoint without one, which obskit does not accept).
        insecure = endpoint.startswith("http://")
        grpc_exporter: SpanExporter = GrpcExporter(
            endpoint=endpoint,
            insecure=insecure,
            credentials=None if insecure else _grpc_credentials(env),
            headers=dict(settings.otlp_headers),
            timeout=settings.otlp_timeout,
            compression=getattr(grpc.Compression, _GRPC_COMPRESSION[env.compression]),
        )
        if reasons is not None:
            record_grpc_outcomes(grpc_exporter, reasons)
        return grpc_exporter
    import requests
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    if env.http_credential_provider is not None:
        session = _credential_provider(env, "python_http", requests.Session)
    elif reasons is not None:
        session = recording_session(reasons)
    else:
        session = requests.Session()
    if env.certificate is not None:
        _verify_per_request(session)
    # True: verify against the default roots. (None would let older exporters read the
    # variable themselves, where a set-but-empty one turns verification off.)
    verify: Any = env.certificate or True
    http_exporter: SpanExporter = HttpExporter(
        endpoint=endpoint,
        certificate_file=verify,
        client_key_file=env.client_key,
        client_certificate_file=env.client_certificate,
        headers=dict(settings.otlp_headers),
        timeout=settings.otlp_timeout,
        compression=Compression(env.compression),
        session=session,
    )
    return http_exporter


def _verify_per_request(session: Any) -> None:
    """Make ``session`` send its own ``verify`` (the CA file) with each request.

    requests lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` win over ``session.verify``
    (only a per-request ``verify`` beats them), and newer OTLP exporters put the CA file
    on the session: without this, ``OTEL_EXPORTER_OTLP_CERTIFICATE`` would be ignored
    wherever such a variable is set, as it is in many container images.
    """
    send = session.request

    def request(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("verify", session.verify)
        return send(*args, **kwargs)

    session.request = request


#: grpc.Compression's member for each checked compression (given explicitly: the gRPC
#: exporter's own reading of OTEL_EXPORTER_OTLP_*COMPRESSION accepts only ``gzip``).
_GRPC_COMPRESSION = {"none": "NoCompression", "gzip": "Gzip", "deflate": "Deflate"}


def _grpc_credentials(env: OtelEnv) -> grpc.ChannelCredentials:
    """TLS credentials for an ``https://`` gRPC endpoint: a credential provider's, or
    built from the certificate files (the system's roots when none is set)."""
    import grpc

    if env.grpc_credential_provider is not None:
        provided: grpc.ChannelCredentials = _credential_provider(
            env, "python_grpc", grpc.ChannelCredentials
        )
        return provided
    from obskit._config.otel_env import variable

    contents: dict[str, bytes | None] = {}
    for key, name in (
        ("root_certificates", "certificate"),
        ("private_key", "client_key"),
        ("certificate_chain", "client_certificate"),
    ):
        field = f"otlp_traces_{name}" if getattr(env, f"otlp_traces_{name}") else f"otlp_{name}"
        path: str | None = getattr(env, field)
        contents[key] = None
        if path is not None:
            try:
                with open(path, "rb") as file:
                    contents[key] = file.read()
            except OSError as error:  # load() read it; it is gone or unreadable since
                raise ConfigError(
                    variable(field),
                    path,
                    env.source(field),
                    f"the path of a readable file ({error.strerror or error})",
                ) from None
    return grpc.ssl_channel_credentials(**contents)


def _credential_provider(env: OtelEnv, prefix: str, kind: type) -> Any:
    """What the credential provider entry point named by ``{prefix}_traces_credential_provider``
    (or else ``{prefix}_credential_provider``) returns; load() checked that it is installed."""
    from importlib.metadata import entry_points

    from obskit._config.otel_env import variable

    field = f"{prefix}_traces_credential_provider"
    if getattr(env, field) is None:
        field = f"{prefix}_credential_provider"
    name, source = getattr(env, field), env.source(field)
    wanted = f"{kind.__module__.split('.')[0]}.{kind.__qualname__}"  # requests.Session
    (entry,) = entry_points(group="opentelemetry_otlp_credential_provider", name=name)
    try:
        provided = entry.load()()
    except Exception as error:
        raise ConfigError(
            variable(field),
            name,
            source,
            f"a credential provider that returns a {wanted}",
            f"it raised {type(error).__name__}: {error}",
        ) from None
    if not isinstance(provided, kind):
        raise ConfigError(
            variable(field),
            name,
            source,
            f"a credential provider that returns a {wanted}",
            f"it returned a {type(provided).__name__}",
        )
    return provided


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
        # Ids from the OS random source: unpredictable from any number of seen ones.
        id_generator=OsRandomIdGenerator(),
        # obskit runs its own deadline-bounded shutdown at exit (see _runtime).
        shutdown_on_exit=False,
    )
    if settings.profiles:  # (root spans' pyroscope.profile.id)
        from obskit._profiles.span_hooks import ProfileSpanProcessor

        provider.add_span_processor(ProfileSpanProcessor())
    if settings.resolved_traces_exporter == "none":
        return provider, None
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from obskit._traces.console_tree import ConsoleTreeExporter
    from obskit._traces.export_reasons import ReasonRecorder
    from obskit._traces.guarded_export import CountingBatchSpanProcessor, GuardedExporter
    from obskit._traces.size_limits import SizeLimits

    reasons = ReasonRecorder()
    exporter = build_exporter(settings, reasons)
    if exporter is None:
        return provider, None
    otlp = settings.resolved_traces_exporter == "otlp"
    guarded = GuardedExporter(
        exporter,
        _host_port(settings) if otlp else None,
        reasons,
        settings.otlp_timeout if otlp else None,
        sizes=SizeLimits(settings.attribute_value_length_limit, settings.export_max_request_bytes),
    )
    from obskit._traces.pipeline_gate import PipelineGate

    # Each processor behind a gate: a span that ends after this pipeline shut down is
    # counted as dropped (reason pipeline_closed), never lost silently.
    if isinstance(exporter, ConsoleTreeExporter):  # a developer watches it live
        provider.add_span_processor(
            with_hot_frames(PipelineGate(SimpleSpanProcessor(guarded)), settings)
        )
        return provider, guarded
    env = settings.otel_env
    processor = CountingBatchSpanProcessor(
        guarded,
        max_queue_size=env.bsp_max_queue_size,
        schedule_delay_millis=env.bsp_schedule_delay,
        max_export_batch_size=env.bsp_max_export_batch_size,
        export_timeout_millis=env.bsp_export_timeout,
    )
    provider.add_span_processor(with_hot_frames(PipelineGate(processor), settings))
    return provider, guarded


def with_hot_frames(processor: SpanProcessor, settings: Settings) -> SpanProcessor:
    """``processor``, behind the profiler's hot-frames step when profiles are on."""
    if not settings.profiles or not settings.profile_slow_span:
        return processor
    from obskit._profiles.span_hooks import HotFramesProcessor

    return HotFramesProcessor(processor, settings.profile_slow_span)


def _span_limits(settings: Settings) -> SpanLimits:
    """Span limits, every one given (so the SDK reads no OTEL_*_LIMIT variable itself).

    The general attribute count limit stands in for each unset specific one, as in the
    SDK; event and link attribute values are unlimited unless
    ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`` is set.
    """
    env = settings.otel_env
    general = env.attribute_count_limit

    def count(specific: int | None) -> int:
        if specific is not None:
            return specific
        return general if general is not None else DEFAULT_COUNT_LIMIT

    length = env.attribute_value_length_limit
    return SpanLimits(
        max_attributes=count(None),
        max_events=env.span_event_count_limit,
        max_links=env.span_link_count_limit,
        max_span_attributes=count(env.span_attribute_count_limit),
        max_event_attributes=count(env.event_attribute_count_limit),
        max_link_attributes=count(env.link_attribute_count_limit),
        max_attribute_length=length if length is not None else SpanLimits.UNSET,
        max_span_attribute_length=settings.attribute_value_length_limit,
    )


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
