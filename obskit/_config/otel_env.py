"""The OpenTelemetry variables the SDK and the OTLP exporters read on their own.

obskit has no ``init()`` argument for these, but it checks every one in
:func:`~obskit._config.settings.load`, before any SDK object exists, and fails with
the same :class:`~obskit.ConfigError` as its own settings (naming the variable, the
value, its source and what is allowed). The tracing pipeline then passes the checked
values to the SDK explicitly, so what happens no longer depends on the installed SDK
version (1.27 raises a ``ValueError`` that names the wrong variable, newer versions
log a warning and fall back) or on what was imported first (``opentelemetry.sdk.trace``
reads a span limit at import).

Each field of :class:`OtelEnv` declares one variable: its default, its value kind and a
one-line doc; the configuration reference page lists them. An empty variable counts as
unset, as for obskit's own settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from obskit._config.value_kinds import (
    Choice,
    ChoiceList,
    Count,
    EntryPoint,
    File,
    Invalid,
    Kind,
    Number,
    TrueFalse,
)
from obskit.exceptions import ConfigError

#: The specification's (and every SDK version's) defaults, passed explicitly.
DEFAULT_COUNT_LIMIT = 128
DEFAULT_MAX_QUEUE_SIZE = 2048
DEFAULT_MAX_EXPORT_BATCH_SIZE = 512

_COMPRESSIONS = ("none", "gzip", "deflate")
#: gRPC status code names (``grpc.StatusCode``), lowercase as ChoiceList reads them.
_GRPC_CODES = (
    "ok",
    "cancelled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
)
_CREDENTIALS = "opentelemetry_otlp_credential_provider"


class Variable:
    """How one SDK variable is checked: its name, its kind and its doc."""

    __slots__ = ("doc", "kind", "name")

    def __init__(self, kind: Kind, name: str, doc: str) -> None:
        self.kind = kind
        self.name = name
        self.doc = doc


def _variable(default: Any, kind: Kind, doc: str, name: str) -> Any:
    return field(default=default, metadata={"obskit": Variable(kind, name, doc)})


@dataclass(frozen=True)
class OtelEnv:
    """The checked values of the variables the OpenTelemetry SDK would read itself."""

    # Span limits (the SDK's SpanLimits; 1.27 reads OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT at import).
    attribute_count_limit: int | None = _variable(
        None,
        Count(0),
        "Most attributes on a span, span event or link, unless a variable below says"
        f" otherwise (default {DEFAULT_COUNT_LIMIT}).",
        "OTEL_ATTRIBUTE_COUNT_LIMIT",
    )
    attribute_value_length_limit: int | None = _variable(
        None,
        Number(1, 1_048_576, integer=True),
        "Longest string kept in an attribute of a span event or link (default: no limit);"
        " spans use it too unless `attribute_value_length_limit` is set.",
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    )
    span_attribute_count_limit: int | None = _variable(
        None,
        Count(0),
        "Most attributes on a span (default: `OTEL_ATTRIBUTE_COUNT_LIMIT`, else"
        f" {DEFAULT_COUNT_LIMIT}); more are dropped.",
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
    )
    span_event_count_limit: int = _variable(
        DEFAULT_COUNT_LIMIT, Count(0), "Most events on a span.", "OTEL_SPAN_EVENT_COUNT_LIMIT"
    )
    span_link_count_limit: int = _variable(
        DEFAULT_COUNT_LIMIT, Count(0), "Most links on a span.", "OTEL_SPAN_LINK_COUNT_LIMIT"
    )
    event_attribute_count_limit: int | None = _variable(
        None,
        Count(0),
        "Most attributes on a span event (default: `OTEL_ATTRIBUTE_COUNT_LIMIT`, else"
        f" {DEFAULT_COUNT_LIMIT}).",
        "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
    )
    link_attribute_count_limit: int | None = _variable(
        None,
        Count(0),
        "Most attributes on a span link (default: `OTEL_ATTRIBUTE_COUNT_LIMIT`, else"
        f" {DEFAULT_COUNT_LIMIT}).",
        "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
    )
    # The batch span processor (OTLP export).
    bsp_schedule_delay: int = _variable(
        5000,
        Count(1, "milliseconds"),
        "Longest wait between two exports of queued spans.",
        "OTEL_BSP_SCHEDULE_DELAY",
    )
    bsp_export_timeout: int = _variable(
        30000,
        Count(0, "milliseconds"),
        "Longest time the batch span processor gives one export.",
        "OTEL_BSP_EXPORT_TIMEOUT",
    )
    bsp_max_queue_size: int = _variable(
        DEFAULT_MAX_QUEUE_SIZE,
        Count(1),
        "Spans queued for export; more are dropped (and counted).",
        "OTEL_BSP_MAX_QUEUE_SIZE",
    )
    bsp_max_export_batch_size: int = _variable(
        DEFAULT_MAX_EXPORT_BATCH_SIZE,
        Count(1),
        "Most spans in one export; at most `OTEL_BSP_MAX_QUEUE_SIZE`.",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    )
    # The OTLP exporter (both protocols); the `_TRACES_` variable wins over the other.
    otlp_compression: str | None = _variable(
        None,
        Choice(_COMPRESSIONS),
        "Compression of OTLP exports (default `none`).",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
    )
    otlp_traces_compression: str | None = _variable(
        None,
        Choice(_COMPRESSIONS),
        "Compression of span exports; wins over `OTEL_EXPORTER_OTLP_COMPRESSION`.",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    )
    otlp_certificate: str | None = _variable(
        None,
        File(),
        "CA certificate (PEM) that verifies an `https://` collector (default: the system's).",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
    )
    otlp_traces_certificate: str | None = _variable(
        None,
        File(),
        "CA certificate for span exports; wins over `OTEL_EXPORTER_OTLP_CERTIFICATE`.",
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    )
    otlp_client_key: str | None = _variable(
        None,
        File(),
        "Client private key (PEM) for mutual TLS; needs a client certificate.",
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
    )
    otlp_traces_client_key: str | None = _variable(
        None,
        File(),
        "Client private key for span exports; wins over `OTEL_EXPORTER_OTLP_CLIENT_KEY`.",
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
    )
    otlp_client_certificate: str | None = _variable(
        None,
        File(),
        "Client certificate (PEM) for mutual TLS.",
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
    )
    otlp_traces_client_certificate: str | None = _variable(
        None,
        File(),
        "Client certificate for span exports; wins over `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`.",
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
    )
    otlp_insecure: bool | None = _variable(
        None,
        TrueFalse(),
        "gRPC plaintext for an endpoint without a scheme; obskit's endpoints always have"
        " one (`http://` is plaintext, `https://` TLS), which decides, so it is only checked.",
        "OTEL_EXPORTER_OTLP_INSECURE",
    )
    otlp_traces_insecure: bool | None = _variable(
        None,
        TrueFalse(),
        "As `OTEL_EXPORTER_OTLP_INSECURE`, for span exports (only checked).",
        "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
    )
    # Python-specific plug-ins and switches.
    python_context: str | None = _variable(
        None,
        EntryPoint("opentelemetry_context"),
        "Runtime context implementation, read when `opentelemetry.context` is first imported"
        " (default `contextvars_context`).",
        "OTEL_PYTHON_CONTEXT",
    )
    python_tracer_provider: str | None = _variable(
        None,
        EntryPoint("opentelemetry_tracer_provider"),
        "Tracer provider the API loads when none is set; leave it unset, obskit installs its own.",
        "OTEL_PYTHON_TRACER_PROVIDER",
    )
    python_meter_provider: str | None = _variable(
        None,
        EntryPoint("opentelemetry_meter_provider"),
        "Meter provider the API loads when none is set (newer SDKs record their own metrics"
        " there).",
        "OTEL_PYTHON_METER_PROVIDER",
    )
    python_sdk_internal_metrics_enabled: bool | None = _variable(
        None,
        TrueFalse(),
        "Let newer SDKs record metrics about their own span processing and export.",
        "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED",
    )
    python_http_credential_provider: str | None = _variable(
        None,
        EntryPoint(_CREDENTIALS),
        "Entry point that returns the `requests.Session` for http/protobuf exports (obskit"
        " then cannot record why an export failed).",
        "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
    )
    python_http_traces_credential_provider: str | None = _variable(
        None,
        EntryPoint(_CREDENTIALS),
        "As the variable above, for span exports; wins over it.",
        "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER",
    )
    python_grpc_credential_provider: str | None = _variable(
        None,
        EntryPoint(_CREDENTIALS),
        "Entry point that returns the `grpc.ChannelCredentials` for `https://` gRPC exports;"
        " wins over the certificate files.",
        "OTEL_PYTHON_EXPORTER_OTLP_GRPC_CREDENTIAL_PROVIDER",
    )
    python_grpc_traces_credential_provider: str | None = _variable(
        None,
        EntryPoint(_CREDENTIALS),
        "As the variable above, for span exports; wins over it.",
        "OTEL_PYTHON_EXPORTER_OTLP_GRPC_TRACES_CREDENTIAL_PROVIDER",
    )
    python_grpc_retryable_error_codes: tuple[str, ...] | None = _variable(
        None,
        ChoiceList(_GRPC_CODES),
        "gRPC status codes after which newer gRPC exporters retry an export.",
        "OTEL_PYTHON_EXPORTER_OTLP_GRPC_RETRYABLE_ERROR_CODES",
    )
    #: Where each value came from: ``env NAME`` or ``default`` (by field name).
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def compression(self) -> str:
        """The span exports' compression: the ``_TRACES_`` variable, the other, or ``none``."""
        return self.otlp_traces_compression or self.otlp_compression or "none"

    @property
    def certificate(self) -> str | None:
        """The CA certificate file for span exports, if one is set."""
        return self.otlp_traces_certificate or self.otlp_certificate

    @property
    def client_key(self) -> str | None:
        """The client key file for span exports, if one is set."""
        return self.otlp_traces_client_key or self.otlp_client_key

    @property
    def client_certificate(self) -> str | None:
        """The client certificate file for span exports, if one is set."""
        return self.otlp_traces_client_certificate or self.otlp_client_certificate

    @property
    def http_credential_provider(self) -> str | None:
        """The entry point that supplies the http/protobuf exporter's session, if set."""
        return self.python_http_traces_credential_provider or self.python_http_credential_provider

    @property
    def grpc_credential_provider(self) -> str | None:
        """The entry point that supplies the gRPC exporter's credentials, if set."""
        return self.python_grpc_traces_credential_provider or self.python_grpc_credential_provider

    def source(self, name: str) -> str:
        """Where the value of field ``name`` came from (``env NAME`` or ``default``)."""
        return self.sources.get(name, "default")


def declared() -> Iterator[tuple[dataclasses.Field[Any], Variable]]:
    """Yield each declared variable's field with its declaration, in declaration order."""
    for item in dataclasses.fields(OtelEnv):
        spec = item.metadata.get("obskit")
        if isinstance(spec, Variable):
            yield item, spec


def variable(name: str) -> str:
    """The environment variable that field ``name`` of :class:`OtelEnv` declares."""
    return next(spec.name for item, spec in declared() if item.name == name)


def load(environ: Mapping[str, str]) -> OtelEnv:
    """Check every declared variable set in ``environ``; return their values.

    Raises:
        ConfigError: naming the variable, its value, ``env NAME`` and what is allowed.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for item, spec in declared():
        text = environ.get(spec.name)
        if text is None or not text.strip():
            continue
        source = f"env {spec.name}"
        try:
            values[item.name] = spec.kind.parse(text, source)
        except Invalid as bad:
            raise ConfigError(spec.name, text, source, bad.allowed, bad.hint) from None
        sources[item.name] = source
    env = OtelEnv(**values, sources=sources)
    _check(env)
    return env


def _check(env: OtelEnv) -> None:
    """Checks that span several variables (the SDK makes the first one itself, later)."""
    queue, batch = env.bsp_max_queue_size, env.bsp_max_export_batch_size
    if batch > queue:
        if env.source("bsp_max_export_batch_size") != "default":
            raise ConfigError(
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                str(batch),
                env.source("bsp_max_export_batch_size"),
                f"a positive integer of at most OTEL_BSP_MAX_QUEUE_SIZE ({queue}, "
                + _from(env.source("bsp_max_queue_size"))
                + ")",
            )
        raise ConfigError(
            "OTEL_BSP_MAX_QUEUE_SIZE",
            str(queue),
            env.source("bsp_max_queue_size"),
            f"a positive integer of at least OTEL_BSP_MAX_EXPORT_BATCH_SIZE ({batch}, the default)",
            "set OTEL_BSP_MAX_EXPORT_BATCH_SIZE too",
        )
    if env.client_key and not env.client_certificate:
        name = (
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY"
            if env.otlp_traces_client_key
            else "OTEL_EXPORTER_OTLP_CLIENT_KEY"
        )
        raise ConfigError(
            name,
            env.client_key,
            f"env {name}",
            "a client key together with a client certificate",
            "set OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE (or its _TRACES_ variant) too",
        )


def _from(source: str) -> str:
    return "the default" if source == "default" else f"from {source}"
