"""The settings table: every obskit setting, declared once, and ``load()``.

Each field of :class:`Settings` *is* the declaration: its type, its default, and in
its metadata the value kind, the environment variables read (in precedence order)
and a one-line doc. The configuration reference page and ``obskit config`` are
generated from it.

Precedence: argument to ``init()`` > ``OBSKIT_*`` variable > standard ``OTEL_*``
variable > default. An argument of ``None`` counts as not given. An environment
variable that is empty counts as unset (as the OpenTelemetry specification says).
``load()`` is the only place in obskit that raises on bad input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from obskit._config.value_kinds import (
    Buckets,
    Choice,
    ChoiceList,
    Flag,
    Invalid,
    Kind,
    Names,
    Number,
    Pairs,
    Text,
    Url,
)
from obskit.exceptions import ConfigError

_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
#: Propagators built into obskit; the rest load from the `opentelemetry_propagator`
#: entry point group of the package named in the error if it is missing.
BUILTIN_PROPAGATORS = ("tracecontext", "baggage", "none")
_PLUGIN_PROPAGATORS = {
    "b3": "opentelemetry-propagator-b3",
    "b3multi": "opentelemetry-propagator-b3",
    "jaeger": "opentelemetry-propagator-jaeger",
    "xray": "opentelemetry-propagator-aws-xray",
    "ottrace": "opentelemetry-propagator-ot-trace",
}


class Spec:
    """How one setting is read: its kind, its environment variables and its doc."""

    __slots__ = ("doc", "env", "kind")

    def __init__(self, kind: Kind, env: tuple[str, ...], doc: str) -> None:
        self.kind = kind
        self.env = env
        self.doc = doc


def _setting(default: Any, kind: Kind, doc: str, *env: str) -> Any:
    return field(default=default, metadata={"obskit": Spec(kind, env, doc)})


def _mapping(default: Mapping[str, str], doc: str, *env: str) -> Any:
    return field(
        default_factory=lambda: dict(default), metadata={"obskit": Spec(Pairs(), env, doc)}
    )


@dataclass(frozen=True)
class Settings:
    """The effective configuration: one immutable value built by :func:`load`."""

    service_name: str | None = _setting(
        None,
        Text(),
        "Logical service name (`service.name`); default: the script's name.",
        "OBSKIT_SERVICE_NAME",
        "OTEL_SERVICE_NAME",
    )
    service_version: str | None = _setting(
        None, Text(), "Service version (`service.version`).", "OBSKIT_SERVICE_VERSION"
    )
    environment: str | None = _setting(
        None,
        Text(),
        "Deployment environment (`deployment.environment.name`), e.g. `production`.",
        "OBSKIT_ENVIRONMENT",
    )
    resource_attributes: dict[str, str] = _mapping(
        {},
        "Extra resource attributes; the settings above win over keys given here.",
        "OBSKIT_RESOURCE_ATTRIBUTES",
        "OTEL_RESOURCE_ATTRIBUTES",
    )
    traces_exporter: str | None = _setting(
        None,
        Choice(("otlp", "console", "none")),
        "Where spans go; default: `otlp` if an OTLP endpoint is set, else `none`.",
        "OBSKIT_TRACES_EXPORTER",
        "OTEL_TRACES_EXPORTER",
    )
    otlp_endpoint: str | None = _setting(
        None,
        Url(),
        "OTLP base URL; `/v1/traces` is appended for http (default `http://localhost:4318`,"
        " `:4317` for grpc).",
        "OBSKIT_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    )
    otlp_traces_endpoint: str | None = _setting(
        None,
        Url(),
        "Full OTLP URL for spans, used as is; wins over `otlp_endpoint`.",
        "OBSKIT_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    )
    otlp_protocol: str = _setting(
        "http/protobuf",
        Choice(("http/protobuf", "grpc")),
        "OTLP transport.",
        "OBSKIT_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    )
    otlp_headers: dict[str, str] = _mapping(
        {},
        "Headers sent with each OTLP export (e.g. an API key).",
        "OBSKIT_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_HEADERS",
    )
    otlp_timeout: float = _setting(
        10.0,
        Number(
            0,
            300,
            open_low=True,
            env_scale={
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": 0.001,
                "OTEL_EXPORTER_OTLP_TIMEOUT": 0.001,
            },
        ),
        "Seconds one OTLP export may take (the `OTEL_*` variables are milliseconds).",
        "OBSKIT_OTLP_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    )
    traces_sampler: str = _setting(
        "parentbased_always_on",
        Choice(_SAMPLERS),
        "Head sampler.",
        "OBSKIT_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER",
    )
    traces_sampler_arg: float = _setting(
        1.0,
        Number(0, 1),
        "Sampling ratio for the `traceidratio` samplers.",
        "OBSKIT_TRACES_SAMPLER_ARG",
        "OTEL_TRACES_SAMPLER_ARG",
    )
    propagators: tuple[str, ...] = _setting(
        ("tracecontext", "baggage"),
        ChoiceList(BUILTIN_PROPAGATORS + tuple(_PLUGIN_PROPAGATORS)),
        "Context propagation formats, in order (W3C trace context and baggage by default).",
        "OBSKIT_PROPAGATORS",
        "OTEL_PROPAGATORS",
    )
    attribute_value_length_limit: int = _setting(
        4096,
        Number(1, 1_048_576, integer=True),
        "Longest string kept in a span attribute; longer values are truncated.",
        "OBSKIT_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    )
    log_level: str = _setting(
        "info",
        Choice(("debug", "info", "warning", "error", "critical")),
        "Lowest level written, for obskit loggers and (with `log_stdlib`) the root logger.",
        "OBSKIT_LOG_LEVEL",
    )
    log_format: str = _setting(
        "auto",
        Choice(("auto", "json", "console")),
        "Log lines as JSON (for shippers) or coloured console text; `auto`: console on a TTY.",
        "OBSKIT_LOG_FORMAT",
    )
    log_stream: str = _setting(
        "stdout",
        Choice(("stdout", "stderr")),
        "Where log lines are written.",
        "OBSKIT_LOG_STREAM",
    )
    log_stdlib: bool = _setting(
        True,
        Flag(),
        "Replace the root `logging` handlers so every library's records use the same format.",
        "OBSKIT_LOG_STDLIB",
    )
    log_max_line_bytes: int = _setting(
        16384,
        Number(1024, 1_048_576, integer=True),
        "Longest log line; longer events are cut (marked `truncated`), never split.",
        "OBSKIT_LOG_MAX_LINE_BYTES",
    )
    metrics_port: int | None = _setting(
        None,
        Number(1, 65535, integer=True),
        "Serve `/metrics` on this port from a background thread (default: no server).",
        "OBSKIT_METRICS_PORT",
    )
    metrics_addr: str = _setting(
        "0.0.0.0",
        Text(),
        "Address the `/metrics` server binds to (`0.0.0.0`: all, so Prometheus reaches the pod).",
        "OBSKIT_METRICS_ADDR",
    )
    metrics_process_collectors: bool = _setting(
        True,
        Flag(),
        "Include the process, platform and GC collectors in obskit's registry.",
        "OBSKIT_METRICS_PROCESS_COLLECTORS",
    )
    metrics_max_series: int = _setting(
        2000,
        Number(1, 1_000_000, integer=True),
        "Distinct label sets per obskit metric; more go to one `__overflow__` series.",
        "OBSKIT_METRICS_MAX_SERIES",
    )
    histogram_buckets: tuple[float, ...] = _setting(
        (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0),
        Buckets(),
        "Default latency buckets in seconds (the OpenTelemetry HTTP duration buckets).",
        "OBSKIT_HISTOGRAM_BUCKETS",
    )
    http_metrics_path: str = _setting(
        "/metrics",
        Text(),
        "Path at which instrumented web apps serve obskit's metrics.",
        "OBSKIT_HTTP_METRICS_PATH",
    )
    http_serve_metrics: bool = _setting(
        True,
        Flag(),
        "Serve `http_metrics_path` from instrumented web apps.",
        "OBSKIT_HTTP_SERVE_METRICS",
    )
    http_excluded_paths: tuple[str, ...] = _setting(
        (),
        Names(lower=False),
        "Paths without spans, metrics or access logs (e.g. `/healthz`); `/prefix/*` matches below.",
        "OBSKIT_HTTP_EXCLUDED_PATHS",
    )
    http_capture_request_headers: tuple[str, ...] = _setting(
        (),
        Names(),
        "Request headers recorded on server spans (`http.request.header.<name>`).",
        "OBSKIT_HTTP_CAPTURE_REQUEST_HEADERS",
    )
    http_capture_response_headers: tuple[str, ...] = _setting(
        (),
        Names(),
        "Response headers recorded on server spans (`http.response.header.<name>`).",
        "OBSKIT_HTTP_CAPTURE_RESPONSE_HEADERS",
    )
    http_redact: tuple[str, ...] = _setting(
        (),
        Names(),
        "More header and query-parameter names whose values become `[REDACTED]`.",
        "OBSKIT_HTTP_REDACT",
    )
    http_traceresponse: bool = _setting(
        True,
        Flag(),
        "Add the W3C `traceresponse` header (the request's trace id) to responses.",
        "OBSKIT_HTTP_TRACERESPONSE",
    )
    http_access_log: bool = _setting(
        True,
        Flag(),
        "Write one `obskit.access` line per request.",
        "OBSKIT_HTTP_ACCESS_LOG",
    )
    db_spans: bool = _setting(
        True,
        Flag(),
        "Trace each SQL query (Django ORM) as a child span and time it in a histogram.",
        "OBSKIT_DB_SPANS",
    )
    capture_pii: bool = _setting(
        False,
        Flag(),
        "Record personal data: the client address on spans and access lines.",
        "OBSKIT_CAPTURE_PII",
    )
    shutdown_timeout: float = _setting(
        5.0,
        Number(0, 300, open_low=True),
        "Seconds `shutdown()` (and interpreter exit) may spend flushing.",
        "OBSKIT_SHUTDOWN_TIMEOUT",
    )
    flush_on_sigterm: bool = _setting(
        True,
        Flag(),
        "On SIGTERM flush buffered spans (within `shutdown_timeout`), then run the old handler.",
        "OBSKIT_FLUSH_ON_SIGTERM",
    )
    disabled: bool = _setting(
        False,
        Flag(),
        "Turn all of obskit into a no-op: no exporter, no threads, no sockets.",
        "OBSKIT_DISABLED",
        "OTEL_SDK_DISABLED",
    )
    strict: bool = _setting(
        False,
        Flag(),
        "Raise obskit's own internal errors instead of counting them (for test suites).",
        "OBSKIT_STRICT",
    )
    fast_paths: bool = _setting(
        True,
        Flag(),
        "Use the accelerators that rely on dependencies' internals (each checked at start-up; "
        "`obskit doctor` lists them). Off: only the dependencies' public APIs are used.",
        "OBSKIT_FAST_PATHS",
    )
    #: Where each value came from: ``argument``, ``env NAME`` or ``default``.
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def resolved_traces_exporter(self) -> str:
        """The exporter in effect once the default (``otlp`` iff an endpoint is set) is applied."""
        if self.traces_exporter is not None:
            return self.traces_exporter
        if self.otlp_endpoint or self.otlp_traces_endpoint:
            return "otlp"
        return "none"


def declared() -> Iterator[tuple[dataclasses.Field[Any], Spec]]:
    """Yield each declared setting with its spec, in declaration order."""
    for item in dataclasses.fields(Settings):
        spec = item.metadata.get("obskit")
        if isinstance(spec, Spec):
            yield item, spec


def names() -> list[str]:
    """All setting names, in declaration order."""
    return [item.name for item, _ in declared()]


def default_of(item: dataclasses.Field[Any]) -> Any:
    """The default value of a declared setting."""
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return item.default


def load(environ: Mapping[str, str], overrides: Mapping[str, object]) -> Settings:
    """Build the effective :class:`Settings` from arguments and an environment mapping.

    Raises:
        ConfigError: for an unknown setting name or an invalid value.
    """
    known = names()
    for name, value in overrides.items():
        if name not in known:
            import difflib  # only on the error path: keeps `import obskit` cheap

            close = difflib.get_close_matches(name, known, n=1)
            raise ConfigError(
                name,
                value,
                "argument",
                "unknown setting; see `obskit config` for the list",
                f"did you mean {close[0]!r}?" if close else "",
            )
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for item, spec in declared():
        value, source = _pick(item.name, spec, environ, overrides)
        if source == "default":
            values[item.name] = default_of(item)
        else:
            try:
                values[item.name] = spec.kind.parse(value, source)
            except Invalid as bad:
                raise ConfigError(item.name, value, source, bad.allowed, bad.hint) from None
        sources[item.name] = source
    settings = Settings(**values, sources=sources)
    _check(settings)
    return settings


def _pick(
    name: str, spec: Spec, environ: Mapping[str, str], overrides: Mapping[str, object]
) -> tuple[object, str]:
    value = overrides.get(name)
    if value is not None:
        return value, "argument"
    for var in spec.env:
        text = environ.get(var)
        if text is not None and text.strip():
            return text, f"env {var}"
    return None, "default"


def _entry_points(**selection: str) -> Any:
    """``importlib.metadata.entry_points(...)``, imported only when asked (~15 ms)."""
    import importlib.metadata

    return importlib.metadata.entry_points(**selection)


def _check(settings: Settings) -> None:
    """Checks that span several settings or the installed packages."""
    import importlib.util

    if settings.disabled:
        return
    if settings.resolved_traces_exporter == "otlp":
        module = (
            "opentelemetry.exporter.otlp.proto.grpc"
            if settings.otlp_protocol == "grpc"
            else "opentelemetry.exporter.otlp.proto.http"
        )
        if importlib.util.find_spec(module) is None:
            raise ConfigError(
                "traces_exporter",
                "otlp",
                settings.sources["traces_exporter"],
                "the OTLP exporter is not installed",
                "pip install 'obskit[otlp]'",
            )
    for name in settings.propagators:
        package = _PLUGIN_PROPAGATORS.get(name)
        if package and not _entry_points(group="opentelemetry_propagator", name=name):
            raise ConfigError(
                "propagators",
                ",".join(settings.propagators),
                settings.sources["propagators"],
                f"propagator {name!r} is not installed",
                f"pip install {package}",
            )
