"""The settings table: every obskit setting, declared once, and ``load()``.

Each field of :class:`Settings` *is* the declaration: its type, its default, and in
its metadata the value kind, the environment variables read (in precedence order)
and a one-line doc. The configuration reference page and ``obskit config`` are
generated from it.

Precedence: argument to ``init()`` > ``OBSKIT_*`` variable > standard ``OTEL_*``
variable > default. An argument of ``None`` counts as not given. An environment
variable that is empty counts as unset (as the OpenTelemetry specification says).
``load()`` is the only place in obskit that raises on bad input: it also checks the
variables the OpenTelemetry SDK reads on its own (:mod:`obskit._config.otel_env`),
before any SDK object is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from obskit._config.value_kinds import (
    Buckets,
    Choice,
    ChoiceList,
    Flag,
    Headers,
    Invalid,
    Kind,
    Names,
    Number,
    Pairs,
    Text,
    Url,
)
from obskit.exceptions import ConfigError

if TYPE_CHECKING:  # imported by load(): `import obskit` stays cheap
    from obskit._config.otel_env import OtelEnv

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
    """How one setting is read: its kind, its environment variables and its doc.

    ``sdk_reads`` names those of its variables that the OpenTelemetry SDK or exporter
    also reads on its own, whatever obskit passes it: they are checked even when a
    variable of higher precedence (or an argument) wins.
    """

    __slots__ = ("doc", "env", "kind", "sdk_reads")

    def __init__(
        self, kind: Kind, env: tuple[str, ...], doc: str, sdk_reads: tuple[str, ...] = ()
    ) -> None:
        self.kind = kind
        self.env = env
        self.doc = doc
        self.sdk_reads = sdk_reads


def _setting(default: Any, kind: Kind, doc: str, *env: str, sdk_reads: tuple[str, ...] = ()) -> Any:
    return field(default=default, metadata={"obskit": Spec(kind, env, doc, sdk_reads)})


def _mapping(
    default: Mapping[str, str],
    doc: str,
    *env: str,
    kind: Pairs | None = None,
    sdk_reads: tuple[str, ...] = (),
) -> Any:
    spec = Spec(kind or Pairs(), env, doc, sdk_reads)
    return field(default_factory=lambda: dict(default), metadata={"obskit": spec})


def _no_otel_env() -> OtelEnv:
    from obskit._config.otel_env import OtelEnv

    return OtelEnv()


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
        "Headers sent with each OTLP export (e.g. an API key); names are kept lowercase.",
        "OBSKIT_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_HEADERS",
        kind=Headers(),
        # Newer http/protobuf exporters add these variables' headers to the ones passed.
        sdk_reads=("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"),
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
        "Seconds one OTLP export may take (the `OTEL_*` variables are whole milliseconds).",
        "OBSKIT_OTLP_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        # The gRPC span exporter parses it whatever timeout it is given.
        sdk_reads=("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",),
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
        # `import opentelemetry.propagate` loads it (and raises for an unknown name).
        sdk_reads=("OTEL_PROPAGATORS",),
    )
    trace_context_incoming: str = _setting(
        "continue",
        Choice(("continue", "restart", "ignore")),
        "An incoming request's trace context: `continue` its trace, `restart` (a new trace"
        " linked to it) or `ignore` it (baggage too); use `restart` where callers are untrusted.",
        "OBSKIT_TRACE_CONTEXT_INCOMING",
    )
    incoming_sampled_per_second: float = _setting(
        100.0,
        Number(0, 1_000_000),
        "Traces per second (per process) an incoming sampled flag may add to the sampler's own"
        " choice (`continue`); beyond that the sampler decides. 0: never.",
        "OBSKIT_INCOMING_SAMPLED_PER_SECOND",
    )
    attribute_value_length_limit: int = _setting(
        4096,
        Number(1, 1_048_576, integer=True),
        "Longest string exported in a span (attribute values, span and event names, status"
        " description, exception message and stacktrace); longer ones are cut"
        " (default: `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT` if set, else 4096).",
        "OBSKIT_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    )
    export_max_request_bytes: int = _setting(
        3_670_016,
        Number(65_536, 268_435_456, integer=True),
        "Largest span export request (encoded, before compression): bigger batches are split"
        " and a bigger span is cut further (default 3.5 MiB, under collectors' usual 4 MiB).",
        "OBSKIT_EXPORT_MAX_REQUEST_BYTES",
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
    log_buffer_bytes: int = _setting(
        4_194_304,
        Number(0, 1_073_741_824, integer=True),
        "Bytes of log lines held in memory while a stdout/stderr pipe or socket is full"
        " (a slow log shipper); past that, whole lines are dropped and counted. 0: none.",
        "OBSKIT_LOG_BUFFER_BYTES",
    )
    metrics_port: int = _setting(
        9464,
        Number(0, 65535, integer=True),
        "Port of the dedicated `/metrics` server, apart from the app's port (a background"
        " thread; under obskit's gunicorn hooks, one server per pod run by the master)."
        " 0: no server.",
        "OBSKIT_METRICS_PORT",
        "OTEL_EXPORTER_PROMETHEUS_PORT",
    )
    metrics_addr: str = _setting(
        "auto",
        Text(),
        "Address the `/metrics` server binds to; `auto`: all (`0.0.0.0`, so Prometheus"
        " reaches the pod) in Kubernetes (`KUBERNETES_SERVICE_HOST` set), else `127.0.0.1`.",
        "OBSKIT_METRICS_ADDR",
        "OTEL_EXPORTER_PROMETHEUS_HOST",
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
        False,
        Flag(),
        "Also serve `http_metrics_path` on the app's own port, to anyone who can reach the"
        " app, before the app's own authentication (off: `/metrics` has its own port).",
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
    http_query_allowlist: tuple[str, ...] = _setting(
        (),
        Names(),
        "Query parameters whose values are recorded (e.g. `page,sort`); every other value"
        " becomes `[REDACTED]`.",
        "OBSKIT_HTTP_QUERY_ALLOWLIST",
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
    disabled_instrumentations: tuple[str, ...] = _setting(
        (),
        Names(),
        "Libraries obskit leaves uninstrumented, by OpenTelemetry's instrumentation names"
        " (e.g. `requests,sqlite3`; see the instrumentation page for the list).",
        "OBSKIT_DISABLED_INSTRUMENTATIONS",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",
    )
    contrib_instrumentations: tuple[str, ...] = _setting(
        (),
        Names(),
        "Installed OpenTelemetry contrib instrumentations to switch on through obskit's"
        " pipeline, by entry point name (e.g. `redis,grpc_client`), or `all`.",
        "OBSKIT_CONTRIB_INSTRUMENTATIONS",
    )
    db_spans: bool = _setting(
        True,
        Flag(),
        "Trace each SQL query (Django ORM, DB-API drivers, SQLAlchemy) as a child span and"
        " time it in a histogram.",
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
    dumps: bool = _setting(
        True,
        Flag(),
        "Thread and task dumps with the trace of each: the registry of running spans,"
        " `dump_signal`, `/debug/dump` on the metrics port, the `stuck_after` watchdog.",
        "OBSKIT_DUMPS",
    )
    dump_signal: str = _setting(
        "sigusr1",
        Choice(("sigusr1", "sigusr2", "none")),
        "Signal that writes a dump of every thread and task to the log (chained with the"
        " handler already there; gunicorn's master passes `SIGUSR1` to its workers).",
        "OBSKIT_DUMP_SIGNAL",
    )
    stuck_after: float = _setting(
        30.0,
        Number(0, 86400),
        "Seconds after which a request or `@traced` span still running is dumped once (its"
        " stack, trace id) and counted in `obskit_stuck_spans_total`. 0: no watchdog.",
        "OBSKIT_STUCK_AFTER",
    )
    dump_heap: bool = _setting(
        False,
        Flag(),
        "Add a heap summary (object types by count and size) to dumps asked for by signal"
        " or endpoint; it walks every object, pausing the process briefly.",
        "OBSKIT_DUMP_HEAP",
    )
    dump_tracemalloc: int = _setting(
        0,
        Number(0, 100, integer=True),
        "Trace allocations with this many frames each (`tracemalloc`) and add the top sites"
        " and their growth since the last dump to the heap summary. 0: off.",
        "OBSKIT_DUMP_TRACEMALLOC",
    )
    crash_logs: bool = _setting(
        True,
        Flag(),
        "Enable `faulthandler` (stacks on stderr at a crash) and log unhandled exceptions"
        " (main thread, threads, asyncio loops) as error lines with their trace id.",
        "OBSKIT_CRASH_LOGS",
    )
    profiles: bool = _setting(
        False,
        Flag(),
        "Sample every thread's Python stack `profile_hz` times a second, each sample"
        " labelled with the span running there; written as pprof to `profile_dir` and/or"
        " sent to `pyroscope_endpoint` every `profile_interval`.",
        "OBSKIT_PROFILES",
    )
    profile_hz: float = _setting(
        100.0,
        Number(1, 1000),
        "Samples per second per thread taken by the profiler.",
        "OBSKIT_PROFILE_HZ",
    )
    profile_interval: float = _setting(
        15.0,
        Number(1, 3600),
        "Seconds of samples in each profile written or sent.",
        "OBSKIT_PROFILE_INTERVAL",
    )
    profile_dir: str | None = _setting(
        None,
        Text(),
        "Directory the profiles are written to as `.pb.gz` pprof files (oldest deleted"
        " beyond `profile_dir_max_mb`).",
        "OBSKIT_PROFILE_DIR",
    )
    profile_dir_max_mb: float = _setting(
        100.0,
        Number(0.1, 1_000_000),
        "Megabytes the profile files in `profile_dir` may take together.",
        "OBSKIT_PROFILE_DIR_MAX_MB",
    )
    pyroscope_endpoint: str | None = _setting(
        None,
        Url(),
        "Grafana Pyroscope (or Alloy's `pyroscope.receive_http`) base URL the profiles are"
        " sent to (its `/ingest` API).",
        "OBSKIT_PYROSCOPE_ENDPOINT",
        "PYROSCOPE_SERVER_ADDRESS",
    )
    profile_slow_span: float = _setting(
        1.0,
        Number(0, 86400),
        "Seconds from which an ended span gets its most sampled frames as a"
        " `profile.hot_frames` event (with profiles on). 0: never.",
        "OBSKIT_PROFILE_SLOW_SPAN",
    )
    profile_max_stacks: int = _setting(
        10_000,
        Number(100, 1_000_000, integer=True),
        "Distinct stacks a profile keeps; samples of further ones are counted under one"
        " 'other stacks' frame and in `obskit_profiler_overflow_samples_total`.",
        "OBSKIT_PROFILE_MAX_STACKS",
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
    #: The checked OpenTelemetry variables the SDK would otherwise read itself.
    otel_env: OtelEnv = field(default_factory=_no_otel_env, repr=False)
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
    from obskit._config import otel_env

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for item, spec in declared():
        value, source = _pick(item.name, spec, environ, overrides)
        if source == "default":
            values[item.name] = default_of(item)
        else:
            values[item.name] = _parse(item.name, spec, value, source)
        sources[item.name] = source
        for var in spec.sdk_reads:  # the SDK reads it even when another value wins
            text = environ.get(var)
            if text is not None and text.strip() and source != f"env {var}":
                _parse(item.name, spec, text, f"env {var}")
    env = otel_env.OtelEnv() if values["disabled"] else otel_env.load(environ)
    if sources["attribute_value_length_limit"] == "default" and env.attribute_value_length_limit:
        # The specification's fallback: the general limit applies to spans too.
        values["attribute_value_length_limit"] = env.attribute_value_length_limit
        sources["attribute_value_length_limit"] = env.source("attribute_value_length_limit")
    settings = Settings(**values, otel_env=env, sources=sources)
    _check(settings, environ)
    return settings


def load_only(environ: Mapping[str, str], *wanted: str) -> dict[str, Any]:
    """The settings named ``wanted``, from the environment alone (no cross-checks): for
    a process that reads a few settings without an ``init()`` (gunicorn's master).

    Raises:
        ConfigError: for an invalid value.
    """
    values: dict[str, Any] = {}
    for item, spec in declared():
        if item.name in wanted:
            value, source = _pick(item.name, spec, environ, {})
            values[item.name] = (
                default_of(item) if source == "default" else _parse(item.name, spec, value, source)
            )
    return values


def _parse(name: str, spec: Spec, value: object, source: str) -> Any:
    try:
        return spec.kind.parse(value, source)
    except Invalid as bad:
        raise ConfigError(name, value, source, bad.allowed, bad.hint) from None


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


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package raises instead
        return False


#: The OTLP span exporter module and its distribution, by protocol.
_EXPORTERS = {
    "http/protobuf": (
        "opentelemetry.exporter.otlp.proto.http",
        "opentelemetry-exporter-otlp-proto-http",
    ),
    "grpc": ("opentelemetry.exporter.otlp.proto.grpc", "opentelemetry-exporter-otlp-proto-grpc"),
}


def _check_profiles(settings: Settings) -> None:
    """Profiles written or sent as pprof need protobuf (the ``profiles`` extra)."""
    if not settings.profiles or not (settings.profile_dir or settings.pyroscope_endpoint):
        return
    if _installed("google.protobuf"):
        return
    name = "profile_dir" if settings.profile_dir else "pyroscope_endpoint"
    raise ConfigError(
        "profiles",
        True,
        settings.sources["profiles"],
        f"true with {name} set only where protobuf is installed: profiles are written and"
        " sent as pprof (a protobuf format)",
        "install protobuf: pip install 'obskit-sdk[profiles]'",
    )


def _check(settings: Settings, environ: Mapping[str, str]) -> None:
    """Checks that span several settings or the installed packages."""
    if settings.disabled:
        return
    disabled_text = environ.get("OTEL_SDK_DISABLED", "")
    if disabled_text.strip().lower() == "true":  # the SDK's own test, in its TracerProvider
        raise ConfigError(
            "disabled",
            False,
            settings.sources["disabled"],
            "false only while OTEL_SDK_DISABLED is not true: the OpenTelemetry SDK reads"
            " OTEL_SDK_DISABLED=true itself and would record no span",
            "unset OTEL_SDK_DISABLED (or set OBSKIT_DISABLED=true)",
        )
    if settings.resolved_traces_exporter == "otlp":
        module, package = _EXPORTERS[settings.otlp_protocol]
        if not _installed(module):
            source = settings.sources["traces_exporter"]
            if source == "default":
                endpoint = settings.sources["otlp_traces_endpoint"]
                if endpoint == "default":
                    endpoint = settings.sources["otlp_endpoint"]
                source = f"default, as an OTLP endpoint is set by {endpoint}"
            raise ConfigError(
                "traces_exporter",
                "otlp",
                source,
                f"otlp needs the OTLP {settings.otlp_protocol} span exporter ({module}),"
                " which is not installed",
                f"install the OTLP exporter: pip install {package}"
                " (or this package's [otlp] extra), i.e. pip install 'obskit-sdk[otlp]'",
            )
    _check_propagators(settings, environ)
    _check_query_allowlist(settings)
    _check_profiles(settings)
    if settings.contrib_instrumentations:
        from obskit._lifecycle import contrib

        contrib.check(
            settings.contrib_instrumentations,
            settings.disabled_instrumentations,
            settings.sources["contrib_instrumentations"],
        )


def _check_propagators(settings: Settings, environ: Mapping[str, str]) -> None:
    text = environ.get("OTEL_PROPAGATORS", "")
    # `import opentelemetry.propagate` loads each name itself, as spelt (case matters), and
    # raises for one that is not installed: whichever value obskit uses, check it first.
    for name in (item.strip() for item in text.split(",") if text.strip()):
        if name.lower() == "none":
            break
        if not _entry_points(group="opentelemetry_propagator", name=name):
            known = sorted({e.name for e in _entry_points(group="opentelemetry_propagator")})
            package = _PLUGIN_PROPAGATORS.get(name)
            raise ConfigError(
                "propagators",
                text,
                "env OTEL_PROPAGATORS",
                "installed propagators, spelt as registered (OpenTelemetry reads this"
                f" variable itself): none, {', '.join(known)}",
                f"propagator {name!r} is not installed"
                + (f": pip install {package}" if package else ""),
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


def _check_query_allowlist(settings: Settings) -> None:
    # The rule lives with the redaction it protects (a leaf module: nothing heavy imported).
    from obskit._http.redaction import allowlist_problem

    for name in settings.http_query_allowlist:
        problem = allowlist_problem(name, settings.http_redact)
        if problem is not None:
            raise ConfigError(
                "http_query_allowlist",
                ",".join(settings.http_query_allowlist),
                settings.sources["http_query_allowlist"],
                problem,
                f"{name!r} cannot be allowlisted",
            )
