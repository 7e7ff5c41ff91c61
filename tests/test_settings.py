"""The settings table: precedence, parsing and the errors bad values give."""

from __future__ import annotations

import re
from typing import Any

import pytest

import obskit
from obskit._config import settings as _settings
from obskit._config.settings import Settings, declared, default_of, load
from obskit._config.value_kinds import (
    Buckets,
    Choice,
    ChoiceList,
    Flag,
    Names,
    Number,
    Pairs,
    Text,
    Url,
)

# Three valid, distinct texts for each setting and the values they parse to.
SAMPLES: dict[str, list[tuple[str, Any]]] = {
    "service_name": [("alpha", "alpha"), ("beta", "beta"), ("gamma", "gamma")],
    "service_version": [("1.0", "1.0"), ("2.0", "2.0"), ("3.0", "3.0")],
    "environment": [("dev", "dev"), ("staging", "staging"), ("prod", "prod")],
    "resource_attributes": [("a=1", {"a": "1"}), ("b=2", {"b": "2"}), ("c=3", {"c": "3"})],
    "traces_exporter": [("console", "console"), ("none", "none"), ("console", "console")],
    "otlp_endpoint": [
        ("http://a:4318", "http://a:4318"),
        ("http://b:4318", "http://b:4318"),
        ("https://c", "https://c"),
    ],
    "otlp_traces_endpoint": [
        ("http://a/v1/traces", "http://a/v1/traces"),
        ("http://b/x", "http://b/x"),
        ("https://c/y", "https://c/y"),
    ],
    "otlp_protocol": [("grpc", "grpc"), ("http/protobuf", "http/protobuf"), ("grpc", "grpc")],
    "otlp_headers": [("k=1", {"k": "1"}), ("k=2", {"k": "2"}), ("k=3", {"k": "3"})],
    # The OTEL_* timeouts are milliseconds: "3000" there is 3 s.
    "otlp_timeout": [("1", 1.0), ("2000", 2.0), ("3000", 3.0)],
    "traces_sampler": [
        ("always_on", "always_on"),
        ("traceidratio", "traceidratio"),
        ("always_off", "always_off"),
    ],
    "traces_sampler_arg": [("0.1", 0.1), ("0.2", 0.2), ("0.3", 0.3)],
    "propagators": [
        ("tracecontext", ("tracecontext",)),
        ("baggage", ("baggage",)),
        ("none", ("none",)),
    ],
    "attribute_value_length_limit": [("100", 100), ("200", 200), ("300", 300)],
    "shutdown_timeout": [("1", 1.0), ("2", 2.0), ("3", 3.0)],
    "log_level": [("debug", "debug"), ("warning", "warning"), ("error", "error")],
    "log_format": [("json", "json"), ("console", "console"), ("auto", "auto")],
    "log_stream": [("stderr", "stderr"), ("stdout", "stdout"), ("stdout", "stdout")],
    "log_stdlib": [("false", False), ("true", True), ("true", True)],
    "log_max_line_bytes": [("2048", 2048), ("4096", 4096), ("8192", 8192)],
    "metrics_port": [("9100", 9100), ("9101", 9101), ("9102", 9102)],
    "metrics_addr": [("127.0.0.1", "127.0.0.1"), ("::1", "::1"), ("0.0.0.0", "0.0.0.0")],
    "metrics_process_collectors": [("false", False), ("true", True), ("true", True)],
    "metrics_max_series": [("10", 10), ("20", 20), ("30", 30)],
    "http_metrics_path": [("/m1", "/m1"), ("/m2", "/m2"), ("/m3", "/m3")],
    "http_serve_metrics": [("false", False), ("true", True), ("true", True)],
    "http_excluded_paths": [
        ("/healthz", ("/healthz",)),
        ("/a,/b/*", ("/a", "/b/*")),
        ("/c", ("/c",)),
    ],
    "http_capture_request_headers": [("X-A", ("x-a",)), ("x-b", ("x-b",)), ("x-c", ("x-c",))],
    "http_capture_response_headers": [("X-A", ("x-a",)), ("x-b", ("x-b",)), ("x-c", ("x-c",))],
    "http_redact": [("pin", ("pin",)), ("otp", ("otp",)), ("ssn", ("ssn",))],
    "http_traceresponse": [("false", False), ("true", True), ("true", True)],
    "http_access_log": [("false", False), ("true", True), ("true", True)],
    "capture_pii": [("true", True), ("false", False), ("true", True)],
    "db_spans": [("false", False), ("true", True), ("true", True)],
    "flush_on_sigterm": [("false", False), ("true", True), ("true", True)],
    "dumps": [("false", False), ("true", True), ("true", True)],
    "dump_signal": [("SIGUSR2", "sigusr2"), ("none", "none"), ("sigusr1", "sigusr1")],
    "stuck_after": [("0", 0.0), ("10", 10.0), ("2.5", 2.5)],
    "dump_heap": [("false", False), ("true", True), ("true", True)],
    "dump_tracemalloc": [("5", 5), ("1", 1), ("10", 10)],
    "crash_logs": [("false", False), ("true", True), ("true", True)],
    "profiles": [("false", False), ("true", True), ("true", True)],
    "profile_hz": [("50", 50.0), ("200", 200.0), ("10", 10.0)],
    "profile_interval": [("5", 5.0), ("30", 30.0), ("60", 60.0)],
    "profile_dir": [("/tmp/p1", "/tmp/p1"), ("/tmp/p2", "/tmp/p2"), ("/tmp/p3", "/tmp/p3")],
    "profile_dir_max_mb": [("10", 10.0), ("20", 20.0), ("30", 30.0)],
    "pyroscope_endpoint": [
        ("http://a:4040", "http://a:4040"),
        ("http://b:4040", "http://b:4040"),
        ("http://c:4040", "http://c:4040"),
    ],
    "profile_slow_span": [("0", 0.0), ("2", 2.0), ("0.5", 0.5)],
    "profile_max_stacks": [("500", 500), ("1000", 1000), ("2000", 2000)],
    "histogram_buckets": [("0.1,1", (0.1, 1.0)), ("1,2", (1.0, 2.0)), ("2,3", (2.0, 3.0))],
    "disabled": [("true", True), ("false", False), ("true", True)],
    "strict": [("true", True), ("false", False), ("true", True)],
    "fast_paths": [("false", False), ("true", True), ("true", True)],
    "trace_context_incoming": [
        ("restart", "restart"),
        ("ignore", "ignore"),
        ("continue", "continue"),
    ],
    "incoming_sampled_per_second": [("10", 10.0), ("20", 20.0), ("30", 30.0)],
    "export_max_request_bytes": [("1048576", 1048576), ("2097152", 2097152), ("3145728", 3145728)],
    "log_buffer_bytes": [("1024", 1024), ("2048", 2048), ("4096", 4096)],
    "http_query_allowlist": [("page", ("page",)), ("q", ("q",)), ("sort", ("sort",))],
    "contrib_instrumentations": [("all", ("all",)), ("all", ("all",)), ([], ())],
    "disabled_instrumentations": [
        ("requests", ("requests",)),
        ("httpx,sqlite3", ("httpx", "sqlite3")),
        ("urllib3", ("urllib3",)),
    ],
}
SETTINGS = [item.name for item, _ in declared()]
SPECS = {item.name: spec for item, spec in declared()}


def test_every_setting_has_precedence_samples() -> None:
    """The precedence table below covers every declared setting."""
    assert sorted(SAMPLES) == sorted(SETTINGS)


def test_every_setting_is_documented_and_has_an_obskit_variable() -> None:
    """Each setting has a one-line doc and an OBSKIT_<NAME> variable first in its list."""
    for name, spec in SPECS.items():
        assert spec.doc
        assert "\n" not in spec.doc
        assert spec.env[0] == f"OBSKIT_{name.upper()}"


@pytest.mark.parametrize("name", SETTINGS)
def test_default_applies_when_nothing_is_set(name: str) -> None:
    """With no argument and no variable, a setting takes its declared default."""
    settings = load({}, {})
    item = next(item for item, _ in declared() if item.name == name)
    assert getattr(settings, name) == default_of(item)
    assert settings.sources[name] == "default"


# The argument used in the precedence test where SAMPLES[name][2] would not differ
# from the winning variable's value (or is not valid as seconds).
ARGUMENTS: dict[str, tuple[object, Any]] = {
    "traces_exporter": ("none", "none"),
    "otlp_protocol": ("http/protobuf", "http/protobuf"),
    "otlp_headers": ({"k": "4"}, {"k": "4"}),
    "otlp_timeout": (4, 4.0),
    "attribute_value_length_limit": (400, 400),
    "disabled": (False, False),
    "log_stream": ("stdout", "stdout"),
    "log_stdlib": (True, True),
    "metrics_process_collectors": (True, True),
    "http_serve_metrics": (True, True),
    "http_traceresponse": (True, True),
    "http_access_log": (True, True),
    "capture_pii": (False, False),
    "db_spans": (True, True),
    "flush_on_sigterm": (True, True),
    "strict": (False, False),
}


@pytest.mark.parametrize("name", SETTINGS)
def test_each_variable_alone_is_read(name: str) -> None:
    """Every listed variable, set alone, provides the value and is named as its source."""
    for index, var in enumerate(SPECS[name].env):
        text, expected = SAMPLES[name][index]
        settings = load({var: text}, {})
        assert getattr(settings, name) == expected
        assert settings.sources[name] == f"env {var}"


@pytest.mark.parametrize("name", SETTINGS)
def test_argument_beats_obskit_variable_beats_otel_variable(name: str) -> None:
    """argument > OBSKIT_* > OTEL_* > default, for every setting."""
    env_vars = SPECS[name].env
    samples = SAMPLES[name]
    environ = {var: samples[i][0] for i, var in enumerate(env_vars)}
    # All variables set: the first listed (OBSKIT_*) wins.
    from_env = load(environ, {})
    assert getattr(from_env, name) == samples[0][1]
    assert from_env.sources[name] == f"env {env_vars[0]}"
    # Without the OBSKIT_* variable, the first OTEL_* one wins.
    if len(env_vars) > 1:
        rest = {var: text for var, text in environ.items() if var != env_vars[0]}
        from_otel = load(rest, {})
        assert getattr(from_otel, name) == samples[1][1]
        assert from_otel.sources[name] == f"env {env_vars[1]}"
    # An argument beats every variable.
    argument, expected = ARGUMENTS.get(name, samples[2])
    assert expected != samples[0][1]
    from_arg = load(environ, {name: argument})
    assert getattr(from_arg, name) == expected
    assert from_arg.sources[name] == "argument"


def test_none_argument_and_empty_variable_count_as_not_given() -> None:
    """init(x=None) falls through to the environment; an empty variable to the default."""
    settings = load({"OTEL_SERVICE_NAME": "from-env"}, {"service_name": None})
    assert settings.service_name == "from-env"
    settings = load({"OTEL_SERVICE_NAME": "  "}, {})
    assert settings.sources["service_name"] == "default"


def test_python_values_are_accepted_as_arguments() -> None:
    """Arguments may be native values: numbers, bools, dicts and lists."""
    settings = load(
        {},
        {
            "otlp_timeout": 3,
            "disabled": False,
            "resource_attributes": {"team": "pay", "replicas": 3, "canary": True},
            "propagators": ["tracecontext"],
            "attribute_value_length_limit": 64,
        },
    )
    assert settings.otlp_timeout == 3.0
    assert settings.resource_attributes == {"team": "pay", "replicas": "3", "canary": "True"}
    assert settings.propagators == ("tracecontext",)
    assert settings.attribute_value_length_limit == 64


def test_pairs_are_percent_decoded() -> None:
    """OTEL_RESOURCE_ATTRIBUTES values are percent-decoded, blanks between pairs ignored."""
    settings = load({"OTEL_RESOURCE_ATTRIBUTES": "team=a%2Cb, ,note=x%3Dy"}, {})
    assert settings.resource_attributes == {"team": "a,b", "note": "x=y"}


def test_booleans_accept_common_spellings() -> None:
    """true/false, 1/0, yes/no, on/off in any case (and padded) are booleans."""
    for text, expected in [("TRUE ", True), ("1", True), ("No", False), ("off", False)]:
        assert load({"OTEL_SDK_DISABLED": text}, {}).disabled is expected


def _bad_values(name: str) -> list[tuple[object, str]]:
    """(value, class) pairs that must be rejected for this setting."""
    kind = SPECS[name].kind
    bad: list[tuple[object, str]] = [(object(), "wrong type"), ("", "empty string")]
    if isinstance(kind, Choice):
        bad.append(("definitely-not-an-option", "unknown enum"))
    if isinstance(kind, ChoiceList):
        bad.append(("tracecontext,nope", "unknown enum"))
        bad.append(("tracecontext,,baggage", "empty entry"))
    if isinstance(kind, Number):
        bad += [(kind.high * 10 + 1, "out of range"), (-1, "out of range"), ("abc", "not a number")]
        bad.append((True, "wrong type"))
        if kind.integer:
            bad.append((1.5, "wrong type"))
    if isinstance(kind, Flag):
        bad.append(("maybe", "not a boolean"))
    if isinstance(kind, Url):
        bad += [
            ("localhost:4318", "no scheme"),
            ("ftp://x", "bad scheme"),
            ("http://h:99999", "bad port"),
        ]
    if isinstance(kind, Pairs):
        bad += [("novalue", "missing ="), ({"": "x"}, "empty key"), ({"k": [1]}, "bad value")]
    if isinstance(kind, Text):
        bad.append((42, "wrong type"))
    if isinstance(kind, Names):
        bad += [("a,,b", "empty entry"), ([1], "wrong item type")]
    if isinstance(kind, Buckets):
        bad += [("1,0.5", "not increasing"), ("0,1", "not positive"), ([1, "x"], "bad entry")]
        bad.append(("1,nan", "not finite"))
    return bad


BAD_CASES = [
    pytest.param(name, value, label, id=f"{name}-{label}-{i}")
    for name in SETTINGS
    for i, (value, label) in enumerate(_bad_values(name))
]


@pytest.mark.parametrize(("name", "value", "label"), BAD_CASES)
def test_invalid_argument_raises_config_error_naming_setting(
    name: str, value: object, label: str
) -> None:
    """Each class of invalid value gives a ConfigError naming setting, value, source, allowed."""
    with pytest.raises(obskit.ConfigError) as caught:
        obskit.init(**{name: value})
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.setting == name
    assert error.source == "argument"
    message = str(error)
    assert f"{name}=" in message
    assert repr(value) in message
    assert "(from argument)" in message
    assert error.allowed
    assert error.allowed in message


def _bad_text(name: str) -> str | None:
    """A non-empty text this setting's variables must reject (None: any text is valid)."""
    kind = SPECS[name].kind
    if isinstance(kind, Text):
        return None
    if isinstance(kind, Pairs):
        return "=oops"
    if isinstance(kind, ChoiceList):
        return "nope"
    if isinstance(kind, Names):
        return "a,,b"
    return "definitely-not-valid"


@pytest.mark.parametrize("name", [name for name in SETTINGS if _bad_text(name) is not None])
def test_invalid_variable_names_the_variable(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad value in a variable names that variable as the source."""
    var = SPECS[name].env[-1]
    for earlier in SPECS[name].env:  # (conftest sets OBSKIT_METRICS_PORT=0)
        monkeypatch.delenv(earlier, raising=False)
    monkeypatch.setenv(var, str(_bad_text(name)))
    with pytest.raises(obskit.ConfigError, match=rf"\(from env {var}\)") as caught:
        obskit.init()
    assert caught.value.setting == name


def test_unknown_argument_suggests_the_close_name() -> None:
    """A misspelt keyword fails with a 'did you mean' suggestion."""
    with pytest.raises(obskit.ConfigError, match=r"did you mean 'service_name'\?") as caught:
        obskit.init(servce_name="x")
    assert caught.value.setting == "servce_name"
    with pytest.raises(obskit.ConfigError, match="unknown setting") as caught:
        obskit.init(zzz=1)
    assert "did you mean" not in str(caught.value)


def test_unknown_enum_value_suggests_the_close_option() -> None:
    """A misspelt sampler suggests the right one and lists the allowed values."""
    with pytest.raises(obskit.ConfigError) as caught:
        obskit.init(traces_sampler="always_onn")
    message = str(caught.value)
    assert "did you mean 'always_on'?" in message
    assert "parentbased_traceidratio" in message


def test_plugin_propagator_that_is_not_installed_says_what_to_install() -> None:
    """Asking for b3 without its package names the package to pip install."""
    with pytest.raises(obskit.ConfigError, match="pip install opentelemetry-propagator-b3"):
        obskit.init(propagators="tracecontext,b3")


def test_otlp_timeout_variables_are_milliseconds() -> None:
    """OTEL_EXPORTER_OTLP_TIMEOUT is milliseconds per the spec; OBSKIT_OTLP_TIMEOUT seconds."""
    assert load({"OTEL_EXPORTER_OTLP_TIMEOUT": "2500"}, {}).otlp_timeout == 2.5
    assert load({"OBSKIT_OTLP_TIMEOUT": "2.5"}, {}).otlp_timeout == 2.5


def test_traces_exporter_default_follows_the_endpoint() -> None:
    """Without traces_exporter, setting an OTLP endpoint means otlp; otherwise none."""
    assert load({}, {}).resolved_traces_exporter == "none"
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert load(environ, {}).resolved_traces_exporter == "otlp"
    assert load(environ, {"traces_exporter": "none"}).resolved_traces_exporter == "none"


def test_settings_are_frozen_values() -> None:
    """Settings compare by value, ignore their sources, and cannot be changed."""
    a = load({"OTEL_SERVICE_NAME": "x"}, {})
    b = load({}, {"service_name": "x"})
    assert a == b
    with pytest.raises(AttributeError):
        a.service_name = "y"  # type: ignore[misc]
    assert isinstance(a, Settings)


def test_error_message_shape() -> None:
    """The message reads: invalid setting NAME=VALUE (from SOURCE): ALLOWED."""
    with pytest.raises(obskit.ConfigError) as caught:
        obskit.init(traces_sampler_arg=2)
    assert re.fullmatch(
        r"invalid setting traces_sampler_arg=2 \(from argument\): a number in \[0, 1\]",
        str(caught.value),
    )


def test_names_lists_every_field_but_sources_and_the_sdk_variables() -> None:
    """Every Settings field except `sources` and `otel_env` is a declared setting."""
    import dataclasses

    fields = [f.name for f in dataclasses.fields(Settings) if f.name not in ("sources", "otel_env")]
    assert _settings.names() == fields


def test_the_general_attribute_length_limit_is_the_span_limits_fallback() -> None:
    """OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT limits span attributes when neither
    OBSKIT_ATTRIBUTE_VALUE_LENGTH_LIMIT nor OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT is set
    (as the specification says), and is named as the source."""
    settings = load({"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "77"}, {})
    assert settings.attribute_value_length_limit == 77
    assert settings.sources["attribute_value_length_limit"] == (
        "env OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"
    )
    environ = {
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "77",
        "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "9",
    }
    both = load(environ, {})
    assert both.attribute_value_length_limit == 9
    assert both.otel_env.attribute_value_length_limit == 77  # still the event/link limit
    assert load(environ, {"attribute_value_length_limit": 5}).attribute_value_length_limit == 5


@pytest.mark.parametrize(
    ("winner", "variable", "text"),
    [
        ("OBSKIT_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "abc"),
        ("OBSKIT_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2.5"),
        ("OBSKIT_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS", "a b=1"),
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
        ("OBSKIT_PROPAGATORS", "OTEL_PROPAGATORS", "tracecontext,nope"),
    ],
)
def test_variables_the_sdk_reads_itself_are_checked_even_when_another_wins(
    winner: str, variable: str, text: str
) -> None:
    """A variable the SDK or exporter reads on its own (whatever obskit passes it) must be
    valid even when a variable of higher precedence gives obskit its value."""
    name = next(name for name, spec in SPECS.items() if variable in spec.sdk_reads)
    good = {"OBSKIT_OTLP_TIMEOUT": "2", "OBSKIT_PROPAGATORS": "baggage"}.get(winner, "k=v")
    assert getattr(load({winner: good}, {}), name) is not None
    with pytest.raises(obskit.ConfigError) as caught:
        load({winner: good, variable: text}, {})
    assert caught.value.setting == name
    assert caught.value.source == f"env {variable}"
    assert caught.value.value == text


def test_propagator_names_must_be_spelt_as_the_sdk_loads_them() -> None:
    """OTEL_PROPAGATORS is loaded by `import opentelemetry.propagate` itself, case-sensitively:
    a name obskit would accept in another case fails init() instead of that import."""
    assert load({"OTEL_PROPAGATORS": "tracecontext,baggage"}, {}).propagators == (
        "tracecontext",
        "baggage",
    )
    assert load({"OTEL_PROPAGATORS": "None"}, {}).propagators == ("none",)
    with pytest.raises(obskit.ConfigError, match="spelt as registered") as caught:
        load({"OTEL_PROPAGATORS": "TraceContext"}, {})
    assert caught.value.source == "env OTEL_PROPAGATORS"
    assert "tracecontext" in caught.value.allowed


def test_sdk_disabled_cannot_be_overridden_into_a_silent_pipeline() -> None:
    """OTEL_SDK_DISABLED=true with obskit told to run (OBSKIT_DISABLED=false or
    disabled=False) is one ConfigError: the SDK's tracer provider would record nothing."""
    for environ, overrides in [
        ({"OTEL_SDK_DISABLED": "TRUE ", "OBSKIT_DISABLED": "false"}, {}),
        ({"OTEL_SDK_DISABLED": "true"}, {"disabled": False}),
    ]:
        with pytest.raises(obskit.ConfigError, match="OTEL_SDK_DISABLED") as caught:
            load(environ, overrides)
        assert caught.value.setting == "disabled"
    assert load({"OTEL_SDK_DISABLED": "1"}, {}).disabled  # obskit's spelling: all off
    assert not load({"OTEL_SDK_DISABLED": "no", "OBSKIT_DISABLED": "false"}, {}).disabled


def test_headers_are_valid_http_headers() -> None:
    """OTLP header names are HTTP tokens (kept lowercase, as the SDK keeps them); values
    have no control characters; in a variable, no quote, semicolon or backslash."""
    headers = load({"OTEL_EXPORTER_OTLP_HEADERS": "API-Key=a%20b,x-team=pay"}, {})
    assert headers.otlp_headers == {"api-key": "a b", "x-team": "pay"}
    assert load({}, {"otlp_headers": {"X-Token": "t"}}).otlp_headers == {"x-token": "t"}
    for bad in ({"a b": "1"}, {"k": "line\nbreak"}, 'k="quoted"', "k=a;b", "(k)=1"):
        with pytest.raises(obskit.ConfigError, match="otlp_headers"):
            load({}, {"otlp_headers": bad})
