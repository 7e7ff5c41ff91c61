"""The variables the OpenTelemetry SDK and the OTLP exporters read on their own.

Each bad value fails ``obskit.init()`` with exactly one ``obskit.ConfigError`` naming the
variable, the value, ``env NAME`` and what is allowed, whatever the SDK version and the
import order. The SDK reads some of these variables at import time (and this test
process imported it long ago), so the contract is checked in fresh processes; the
table of every declared variable is checked in this process through ``load()``.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import ssl
import subprocess
import sys
import textwrap
import threading
import zlib
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import obskit
from obskit._config import otel_env
from obskit._config.otel_env import OtelEnv
from obskit._config.settings import declared, load
from tests.receivers import OtlpGrpcReceiver, _Store, accept_export
from tests.servers import ROOT, clean_env
from tests.terminal import run_obskit

VARIABLES = {spec.name: (item, spec) for item, spec in otel_env.declared()}

#: The child: init() from the environment; a ConfigError is printed as JSON (exit 3).
INIT = """
import json, sys
import obskit
try:
    obskit.init(log_level="error")
except obskit.ConfigError as error:
    print(json.dumps({"setting": error.setting, "value": repr(error.value),
                      "source": error.source, "allowed": error.allowed,
                      "message": str(error)}))
    sys.exit(3)
print("ok")
"""


def _child(
    code: str, env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter with only ``env``'s OTEL_*/OBSKIT_* variables."""
    return subprocess.run(
        [sys.executable, *args, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=clean_env(**env),
        cwd=ROOT,
        timeout=timeout,
    )


def _config_error(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The ConfigError the child reported, after checking it was the only failure."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 3, (result.stdout, result.stderr)
    error: dict[str, str] = json.loads(result.stdout.splitlines()[-1])
    return error


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A readable file standing in for a PEM certificate or key (only its existence and
    readability are checked before an exporter reads it)."""
    path = tmp_path_factory.mktemp("pem") / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    return path


# --- the declarations --------------------------------------------------------------


def test_each_variable_is_declared_once_with_a_one_line_doc() -> None:
    """Every SDK variable has one declaration (none is also an obskit setting's variable),
    a one-line doc, and is an OTEL_* name; the reference page lists each."""
    setting_vars = [var for _, spec in declared() for var in spec.env]
    names = [spec.name for _, spec in otel_env.declared()]
    assert len(names) == len(set(names))
    assert not set(names) & set(setting_vars)
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for name in names:
        _, spec = VARIABLES[name]
        assert name.startswith("OTEL_")
        assert spec.doc
        assert "\n" not in spec.doc
        assert f"| `{name}` |" in page


#: A valid text for every declared variable and what it parses to ("{pem}": a file).
VALID: dict[str, tuple[str, Any]] = {
    "OTEL_ATTRIBUTE_COUNT_LIMIT": (" 7 ", 7),
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": ("100", 100),
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": ("0", 0),
    "OTEL_SPAN_EVENT_COUNT_LIMIT": ("3", 3),
    "OTEL_SPAN_LINK_COUNT_LIMIT": ("1000", 1000),
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT": ("5", 5),
    "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT": ("6", 6),
    "OTEL_BSP_SCHEDULE_DELAY": ("200", 200),
    "OTEL_BSP_EXPORT_TIMEOUT": ("0", 0),
    "OTEL_BSP_MAX_QUEUE_SIZE": ("4096", 4096),
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": ("256", 256),
    "OTEL_EXPORTER_OTLP_COMPRESSION": ("GZIP ", "gzip"),
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": ("deflate", "deflate"),
    "OTEL_EXPORTER_OTLP_CERTIFICATE": ("{pem}", "{pem}"),
    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": ("{pem}", "{pem}"),
    "OTEL_EXPORTER_OTLP_CLIENT_KEY": ("{pem}", "{pem}"),
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY": ("{pem}", "{pem}"),
    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": ("{pem}", "{pem}"),
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE": ("{pem}", "{pem}"),
    "OTEL_EXPORTER_OTLP_INSECURE": ("TRUE", True),
    "OTEL_EXPORTER_OTLP_TRACES_INSECURE": ("false", False),
    "OTEL_PYTHON_CONTEXT": ("contextvars_context", "contextvars_context"),
    "OTEL_PYTHON_TRACER_PROVIDER": ("sdk_tracer_provider", "sdk_tracer_provider"),
    "OTEL_PYTHON_METER_PROVIDER": ("sdk_meter_provider", "sdk_meter_provider"),
    "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED": ("false", False),
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER": ("obskit_test_session", "="),
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER": ("obskit_test_session", "="),
    "OTEL_PYTHON_EXPORTER_OTLP_GRPC_CREDENTIAL_PROVIDER": ("obskit_test_channel", "="),
    "OTEL_PYTHON_EXPORTER_OTLP_GRPC_TRACES_CREDENTIAL_PROVIDER": ("obskit_test_channel", "="),
    "OTEL_PYTHON_EXPORTER_OTLP_GRPC_RETRYABLE_ERROR_CODES": (
        "unavailable, DEADLINE_EXCEEDED",
        ("unavailable", "deadline_exceeded"),
    ),
}

#: Texts every variable of a kind must reject (besides the ones in BAD below).
BAD: dict[str, list[str]] = {
    "Count": ["abc", "-1", "1.5", "TRUE"],
    "Number": ["0", "abc", "99999999"],
    "Choice": ["zstd"],
    "File": ["/no/such/file.pem", "/"],
    "TrueFalse": ["1", "yes"],
    "EntryPoint": ["no-such-plugin"],
    "ChoiceList": ["nope", "unavailable,,internal"],
}


@pytest.fixture
def provider_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real (tiny) installed distribution with two credential provider entry points:
    ``obskit_test_session`` (a requests.Session sending ``x-provider: yes``) and
    ``obskit_test_channel`` (grpc's default TLS credentials). It is put on sys.path here
    and on PYTHONPATH for children."""
    (tmp_path / "obskit_test_creds.py").write_text(
        textwrap.dedent(
            """
            def session():
                import requests
                session = requests.Session()
                session.headers["x-provider"] = "yes"
                return session

            def channel():
                import grpc
                return grpc.ssl_channel_credentials()

            def wrong():
                return "not credentials"
            """
        )
    )
    info = tmp_path / "obskit_test_creds-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: obskit-test-creds\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[opentelemetry_otlp_credential_provider]\n"
        "obskit_test_session = obskit_test_creds:session\n"
        "obskit_test_channel = obskit_test_creds:channel\n"
        "obskit_test_wrong = obskit_test_creds:wrong\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_every_variable_has_a_valid_sample() -> None:
    """The table below covers every declared variable."""
    assert sorted(VALID) == sorted(VARIABLES)


@pytest.mark.parametrize("name", sorted(VARIABLES))
def test_each_variable_is_read_checked_and_named(name: str, pem: Path, provider_dist: Path) -> None:
    """A valid text is parsed (and its source named); each invalid text for its kind is one
    ConfigError naming the variable, the value, `env NAME` and what is allowed."""
    item, spec = VARIABLES[name]
    text, expected = VALID[name]
    text = text.replace("{pem}", str(pem))
    expected = text.strip() if expected == "=" else expected
    if expected == "{pem}":
        expected = str(pem)
    environ = {name: text}
    if "CLIENT_KEY" in name:  # a key needs a certificate to go with it
        environ["OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"] = str(pem)
    env = load(environ, {}).otel_env
    assert getattr(env, item.name) == expected
    assert env.source(item.name) == f"env {name}"
    for bad in BAD[type(spec.kind).__name__]:
        with pytest.raises(obskit.ConfigError) as caught:
            load({name: bad}, {})
        error = caught.value
        assert (error.setting, error.value, error.source) == (name, bad, f"env {name}")
        assert error.allowed
        assert str(error).startswith(
            f"invalid setting {name}={bad!r} (from env {name}): {error.allowed}"
        )


def test_unset_and_empty_variables_take_the_specification_defaults() -> None:
    """Without variables (or with empty ones, which count as unset) the values passed to
    the SDK are the specification's defaults."""
    assert load(dict.fromkeys(VARIABLES, " "), {}).otel_env == OtelEnv()
    env = OtelEnv()
    assert (env.bsp_max_queue_size, env.bsp_max_export_batch_size) == (2048, 512)
    assert (env.bsp_schedule_delay, env.bsp_export_timeout) == (5000, 30000)
    assert (env.span_event_count_limit, env.compression) == (128, "none")


def test_a_traces_variable_wins_over_the_general_one(pem: Path, tmp_path: Path) -> None:
    """OTEL_EXPORTER_OTLP_TRACES_* wins over OTEL_EXPORTER_OTLP_* for each option."""
    other = tmp_path / "other.pem"
    other.write_text("x")
    env = load(
        {
            "OTEL_EXPORTER_OTLP_COMPRESSION": "deflate",
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip",
            "OTEL_EXPORTER_OTLP_CERTIFICATE": str(other),
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": str(pem),
        },
        {},
    ).otel_env
    assert (env.compression, env.certificate) == ("gzip", str(pem))


@pytest.mark.parametrize(
    ("environ", "variable", "allowed"),
    [
        ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "3000"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "at most"),
        (
            {"OTEL_BSP_MAX_QUEUE_SIZE": "10", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "20"},
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            "at most OTEL_BSP_MAX_QUEUE_SIZE (10, from env OTEL_BSP_MAX_QUEUE_SIZE)",
        ),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "100"}, "OTEL_BSP_MAX_QUEUE_SIZE", "at least"),
    ],
)
def test_the_batch_size_must_fit_the_queue(
    environ: dict[str, str], variable: str, allowed: str
) -> None:
    """The SDK's own cross-check (batch size <= queue size, defaults included) is made
    first, naming the variable that was set."""
    with pytest.raises(obskit.ConfigError) as caught:
        load(environ, {})
    assert caught.value.setting == variable
    assert caught.value.source == f"env {variable}"
    assert allowed in caught.value.allowed
    assert load({**environ, "OTEL_BSP_MAX_QUEUE_SIZE": "5000"}, {}).otel_env


def test_disabled_obskit_checks_no_sdk_variable() -> None:
    """With obskit disabled nothing reads the SDK's variables, so none fails init()."""
    settings = load({"OTEL_SDK_DISABLED": "true", "OTEL_BSP_SCHEDULE_DELAY": "abc"}, {})
    assert settings.disabled
    assert settings.otel_env == OtelEnv()


# --- fresh processes: every family, the import order, good values -----------------

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}  # nothing is sent

#: (family, environment, the variable the error must name as its source, the bad value)
FAMILIES = [
    ("span limits", {"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "abc"}, None, None),
    ("span limits", {"OTEL_SPAN_EVENT_COUNT_LIMIT": "-1"}, None, None),
    ("span limits", {"OTEL_SPAN_LINK_COUNT_LIMIT": "1.5"}, None, None),
    ("span limits", {"OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT": "TRUE"}, None, None),
    ("span limits", {"OTEL_LINK_ATTRIBUTE_COUNT_LIMIT": "many"}, None, None),
    ("span limits", {"OTEL_ATTRIBUTE_COUNT_LIMIT": "-5"}, None, None),
    ("span limits", {"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "0"}, None, None),
    ("span limits", {"OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "abc"}, None, None),
    ("batch processor", {"OTEL_BSP_SCHEDULE_DELAY": "abc"}, None, None),
    ("batch processor", {"OTEL_BSP_SCHEDULE_DELAY": "0"}, None, None),
    ("batch processor", {"OTEL_BSP_EXPORT_TIMEOUT": "-1"}, None, None),
    ("batch processor", {"OTEL_BSP_MAX_QUEUE_SIZE": "0"}, None, None),
    ("batch processor", {"OTEL_BSP_MAX_QUEUE_SIZE": "100"}, None, None),
    ("batch processor", {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "10000"}, None, None),
    ("otlp", {"OTEL_EXPORTER_OTLP_COMPRESSION": "bogus"}, None, None),
    ("otlp", {"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "zstd"}, None, None),
    ("otlp", {"OTEL_EXPORTER_OTLP_CERTIFICATE": "/no/such/ca.pem"}, None, None),
    ("otlp", {"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": "/"}, None, None),
    ("otlp", {"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": "/no/such/client.pem"}, None, None),
    ("otlp", {"OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY": "/no/such/key.pem"}, None, None),
    ("otlp", {"OTEL_EXPORTER_OTLP_INSECURE": "yes"}, None, None),
    ("otlp", {"OTEL_EXPORTER_OTLP_TRACES_INSECURE": "1"}, None, None),
    ("otlp", {"OTEL_EXPORTER_OTLP_HEADERS": "api key=1"}, None, None),
    ("otlp", {"OTEL_EXPORTER_OTLP_TIMEOUT": "1.5"}, None, None),
    (
        "otlp",
        {"OBSKIT_OTLP_TIMEOUT": "5", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "soon"},
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "soon",
    ),
    (
        "otlp",
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_COMPRESSION": "br"},
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "br",
    ),
    ("python", {"OTEL_PYTHON_CONTEXT": "threadlocal"}, None, None),
    ("python", {"OTEL_PYTHON_TRACER_PROVIDER": "bogus"}, None, None),
    ("python", {"OTEL_PYTHON_METER_PROVIDER": "bogus"}, None, None),
    ("python", {"OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED": "on"}, None, None),
    ("python", {"OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER": "vault"}, None, None),
    ("python", {"OTEL_PYTHON_EXPORTER_OTLP_GRPC_RETRYABLE_ERROR_CODES": "flaky"}, None, None),
    ("propagators", {"OTEL_PROPAGATORS": "TraceContext"}, None, None),
    (
        "propagators",
        {"OBSKIT_PROPAGATORS": "tracecontext", "OTEL_PROPAGATORS": "bogus"},
        "OTEL_PROPAGATORS",
        "bogus",
    ),
    (
        "sdk disabled",
        {"OBSKIT_DISABLED": "false", "OTEL_SDK_DISABLED": "true"},
        "OBSKIT_DISABLED",
        False,
    ),
]


def _family_id(case: tuple[str, dict[str, str], object, object]) -> str:
    family, environ, _, _ = case
    return f"{family}-" + "-".join(f"{k}={v}" for k, v in environ.items())


@pytest.mark.parametrize("case", FAMILIES, ids=[_family_id(case) for case in FAMILIES])
def test_a_bad_variable_fails_init_with_one_config_error_in_a_fresh_process(
    case: tuple[str, dict[str, str], str | None, object],
) -> None:
    """In a fresh process (nothing imported before obskit), each bad value fails init()
    with exactly one ConfigError that names the variable, the value, `env NAME` and what
    is allowed; no SDK ValueError, no traceback."""
    _, environ, variable, value = case
    if variable is None:
        ((variable, value),) = environ.items()
    error = _config_error(_child(INIT, {**ENDPOINT, **environ}))
    assert error["source"] == f"env {variable}"
    assert error["value"] == repr(value)
    assert f"={value!r} (from env {variable}): " in error["message"]
    assert error["allowed"]
    assert error["allowed"] in error["message"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "abc"), ("OTEL_BSP_SCHEDULE_DELAY", "-1")],
)
def test_the_sdk_imported_first_changes_nothing(variable: str, value: str) -> None:
    """With the SDK imported (and the variable set) before obskit, as in a test suite,
    the same ConfigError comes from init()."""
    prefix = (
        "import os\n"
        "import opentelemetry.sdk.trace, opentelemetry.sdk.trace.export\n"
        f"os.environ[{variable!r}] = {value!r}\n"
    )
    code = prefix + textwrap.dedent(INIT)
    error = _config_error(_child(code, ENDPOINT))
    assert (error["setting"], error["value"]) == (variable, repr(value))


def test_the_command_line_reports_a_bad_variable_without_a_traceback() -> None:
    """`obskit config` and `obskit doctor` report a bad SDK variable as the ConfigError's
    message and exit 2; `obskit config` lists the SDK variables that are set."""
    bad = {**ENDPOINT, "OTEL_BSP_MAX_QUEUE_SIZE": "lots"}
    for command in ("config", "doctor"):
        result = run_obskit([command], **bad)
        assert result.returncode == 2, (result.stdout, result.stderr)
        output = result.stdout + result.stderr
        assert "Traceback" not in output
        assert "OTEL_BSP_MAX_QUEUE_SIZE='lots' (from env OTEL_BSP_MAX_QUEUE_SIZE)" in output
    shown = run_obskit(["config"], OTEL_BSP_SCHEDULE_DELAY="250")
    assert shown.returncode == 0, shown.stderr
    assert re.search(
        r"^\(read by the SDK\) +env +OTEL_BSP_SCHEDULE_DELAY +250$", shown.stdout, re.M
    )


class _EncodedReceiver(_Store):
    """An OTLP/HTTP receiver that records each request's Content-Encoding and decodes
    gzip and deflate bodies (the shared receiver takes plain protobuf only); with
    ``tls`` (certificate, key), an HTTPS one that requires a client certificate signed
    by that same certificate (unless ``client_certificates`` is False)."""

    def __init__(
        self, tls: tuple[Path, Path] | None = None, client_certificates: bool = True
    ) -> None:
        super().__init__()
        store = self
        self.encodings: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                encoding = self.headers.get("Content-Encoding", "")
                store.encodings.append(encoding)
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                accept_export(self, store, body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            context.load_verify_locations(tls[0])
            context.verify_mode = ssl.CERT_REQUIRED if client_certificates else ssl.CERT_NONE
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            scheme = "https"
        self.endpoint = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def encoded_receiver() -> Iterator[_EncodedReceiver]:
    receiver = _EncodedReceiver()
    yield receiver
    receiver.close()


#: The child for good values: five attributes on one span, flushed, then shut down.
EXPORT = """
import obskit
handle = obskit.init(log_level="error", service_name="config-env")
with obskit.span("checked", a=1, b=2, c=3, d=4, e=5):
    pass
assert handle.force_flush(timeout=10)
obskit.shutdown()
print("ok")
"""


@pytest.mark.parametrize("compression", ["gzip", "deflate", "none"])
def test_good_values_reach_the_sdk_over_http(
    compression: str, encoded_receiver: _EncodedReceiver, pem: Path
) -> None:
    """Good values work, in a fresh process: the compression is applied, the span limit
    and the batch processor's settings are the ones given (the span keeps 2 of its 5
    attributes), and a CA file is accepted for a plaintext endpoint."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": encoded_receiver.endpoint,
        "OTEL_EXPORTER_OTLP_COMPRESSION": compression,
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "2",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_BSP_MAX_QUEUE_SIZE": "64",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "32",
        "OTEL_BSP_EXPORT_TIMEOUT": "5000",
        "OTEL_EXPORTER_OTLP_CERTIFICATE": str(pem),
        "OTEL_PROPAGATORS": "tracecontext,baggage",
    }
    result = _child(EXPORT, env)
    assert result.returncode == 0, result.stderr
    (span,) = encoded_receiver.wait_for(1)
    assert span.name == "checked"
    assert len(span.attributes) == 2
    assert encoded_receiver.encodings[0] == ("" if compression == "none" else compression)


def test_compression_none_works_over_grpc(grpc_receiver: OtlpGrpcReceiver) -> None:
    """`none` (which the gRPC exporter's own reading of the variable rejects on every SDK
    version) and the limits reach the gRPC exporter: the span arrives."""
    env = {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": grpc_receiver.endpoint,
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "none",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "5000",
        "OTEL_ATTRIBUTE_COUNT_LIMIT": "3",
    }
    result = _child(EXPORT, env)
    assert result.returncode == 0, result.stderr
    (span,) = grpc_receiver.wait_for(1)
    assert len(span.attributes) == 3


def test_a_credential_provider_supplies_the_http_session(
    provider_dist: Path, encoded_receiver: _EncodedReceiver
) -> None:
    """OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER names an installed entry point
    whose requests.Session carries the exports (its header reaches the collector); one
    returning something else fails init() with a ConfigError naming the variable."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": encoded_receiver.endpoint,
        "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER": "obskit_test_session",
        "PYTHONPATH": str(provider_dist),
    }
    result = _child(EXPORT, env)
    assert result.returncode == 0, result.stderr
    assert len(encoded_receiver.wait_for(1)) == 1
    assert encoded_receiver.headers[0]["x-provider"] == "yes"
    wrong = {
        **env,
        "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER": "obskit_test_wrong",
    }
    error = _config_error(_child(INIT, wrong))
    assert error["setting"] == "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER"
    assert "requests.Session" in error["allowed"]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key, made by openssl:
    the collector's certificate, the CA that verifies it and the client's, all in one."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    request += ["-subj", "/CN=127.0.0.1"]
    extensions = ["subjectAltName=IP:127.0.0.1", "basicConstraints=critical,CA:TRUE"]
    subprocess.run(
        ["openssl", *request, "-keyout", str(key), "-out", str(cert)]
        + [arg for extension in extensions for arg in ("-addext", extension)],
        check=True,
        capture_output=True,
    )
    return cert, key


def _tls_env(cert: Path, key: Path, traces: bool) -> dict[str, str]:
    infix = "_TRACES_" if traces else "_"
    return {
        f"OTEL_EXPORTER_OTLP{infix}CERTIFICATE": str(cert),
        f"OTEL_EXPORTER_OTLP{infix}CLIENT_KEY": str(key),
        f"OTEL_EXPORTER_OTLP{infix}CLIENT_CERTIFICATE": str(cert),
    }


@pytest.mark.parametrize("traces", [False, True], ids=["general", "traces"])
def test_certificate_files_reach_the_http_exporter(
    tls_files: tuple[Path, Path], traces: bool
) -> None:
    """The CA, client key and client certificate files are the ones the http/protobuf
    exporter uses, even where REQUESTS_CA_BUNDLE is set (requests lets it win over a
    session's CA file): an HTTPS collector that requires a client certificate receives
    the span; without the files nothing arrives (the usual CAs do not know this one)."""
    import certifi

    receiver = _EncodedReceiver(tls=tls_files)
    try:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "REQUESTS_CA_BUNDLE": certifi.where(),
            **_tls_env(*tls_files, traces),
        }
        result = _child(EXPORT, env)
        assert result.returncode == 0, result.stderr
        assert len(receiver.wait_for(1)) == 1
        no_files = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OBSKIT_OTLP_TIMEOUT": "2"}
        plain = _child(EXPORT.replace("assert handle", "handle"), no_files)
        assert plain.returncode == 0, plain.stderr
        assert len(receiver.spans) == 1
    finally:
        receiver.close()


def test_an_empty_certificate_variable_keeps_tls_verification_on(
    tls_files: tuple[Path, Path],
) -> None:
    """``OTEL_EXPORTER_OTLP_CERTIFICATE=`` (set, empty) means "no CA file": the collector's
    certificate is still verified against the usual roots, which do not know this
    self-signed one, so nothing arrives (older exporters turned verification off)."""
    receiver = _EncodedReceiver(tls=tls_files, client_certificates=False)
    try:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_CERTIFICATE": "",
            "OBSKIT_OTLP_TIMEOUT": "2",
        }
        result = _child(EXPORT.replace("assert handle", "handle"), env)
        assert result.returncode == 0, result.stderr
        trusted = _child(EXPORT, {**env, "OTEL_EXPORTER_OTLP_CERTIFICATE": str(tls_files[0])})
        assert trusted.returncode == 0, trusted.stderr
        assert len(receiver.wait_for(1)) == 1  # only the export that knew the CA
        assert len(receiver.spans) == 1
    finally:
        receiver.close()


@pytest.mark.parametrize("traces", [False, True], ids=["general", "traces"])
def test_certificate_files_reach_the_grpc_exporter(
    tls_files: tuple[Path, Path], traces: bool
) -> None:
    """For an https:// gRPC endpoint obskit builds the channel's credentials from the
    same files: a collector that requires a client certificate receives the span."""
    import grpc

    from tests.receivers import trace_service_pb2, trace_service_pb2_grpc

    store = _Store()

    class Service(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
        def Export(self, request: Any, context: Any) -> Any:
            store.add(request, {})
            return trace_service_pb2.ExportTraceServiceResponse()

    cert, key = (path.read_bytes() for path in tls_files)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    credentials = grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=cert, require_client_auth=True
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        env = {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"https://127.0.0.1:{port}",
            **_tls_env(*tls_files, traces),
        }
        result = _child(EXPORT, env)
        assert result.returncode == 0, result.stderr
        assert len(store.wait_for(1)) == 1
    finally:
        server.stop(grace=None).wait()


def test_a_grpc_credential_provider_is_loaded(provider_dist: Path) -> None:
    """OTEL_PYTHON_EXPORTER_OTLP_GRPC_CREDENTIAL_PROVIDER's entry point gives the TLS
    credentials of an https:// gRPC endpoint (init() succeeds, nothing is sent yet)."""
    env = {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://127.0.0.1:9",
        "OTEL_PYTHON_EXPORTER_OTLP_GRPC_CREDENTIAL_PROVIDER": "obskit_test_channel",
        "PYTHONPATH": str(provider_dist),
    }
    assert _child(INIT, env).stdout.strip() == "ok"
    wrong = {**env, "OTEL_PYTHON_EXPORTER_OTLP_GRPC_CREDENTIAL_PROVIDER": "obskit_test_wrong"}
    error = _config_error(_child(INIT, wrong))
    assert error["setting"] == "OTEL_PYTHON_EXPORTER_OTLP_GRPC_CREDENTIAL_PROVIDER"
    assert "grpc.ChannelCredentials" in error["allowed"]


# --- the base install: no OTLP exporter package ------------------------------------


def _base_install(target: Path) -> Path:
    """A site directory holding only obskit's base dependencies (its requirements without
    extras, recursively), as symlinks to the installed packages.

    This is a real install layout, not a simulation: a ``python -S`` child with only this
    directory and the repository on its path cannot import ``opentelemetry.exporter``
    (the OTLP exporters come with the ``[otlp]`` extra). Symlinks instead of a virtualenv
    with ``pip install --no-deps``: the same packages, in well under a second.
    """
    import importlib.metadata

    from packaging.requirements import Requirement

    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = ["obskit-sdk"]
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        dist = seen[key] = importlib.metadata.distribution(name)
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    del seen["obskit-sdk"]  # the repository itself goes on the path
    for dist in seen.values():
        for file in dist.files or []:
            parts = file.parts
            # opentelemetry is a namespace package shared by the exporters: link its parts.
            top = parts[:2] if parts[0] == "opentelemetry" and len(parts) > 2 else parts[:1]
            if top[0] in ("..", "__pycache__"):
                continue
            source = Path(str(dist.locate_file(Path(*top))))
            link = target.joinpath(*top)
            if source.exists() and not (link.exists() or link.is_symlink()):
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(source)
    return target


@pytest.fixture(scope="module")
def base_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _base_install(tmp_path_factory.mktemp("base-site"))


def _base_child(
    site: Path, args: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-S", *args],
        capture_output=True,
        text=True,
        env=clean_env(coverage=False, PYTHONPATH=f"{site}:{ROOT}", **env),
        cwd=ROOT,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("protocol", "package"),
    [
        ("http/protobuf", "opentelemetry-exporter-otlp-proto-http"),
        ("grpc", "opentelemetry-exporter-otlp-proto-grpc"),
    ],
)
def test_without_the_otlp_exporter_init_config_and_doctor_say_what_to_install(
    base_site: Path, protocol: str, package: str
) -> None:
    """With the base install (no OTLP exporter package) and an endpoint set, init(),
    `obskit config` and `obskit doctor` each report one ConfigError naming the exporter
    package to install (not `obskit[otlp]`: that name on PyPI is another project), and
    never a traceback."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
    }
    probe = _base_child(base_site, ["-c", "import opentelemetry.exporter"], {})
    assert "No module named 'opentelemetry.exporter'" in probe.stderr  # really absent
    assert (
        _base_child(base_site, ["-c", "import obskit.cli, opentelemetry.sdk.trace"], {}).returncode
        == 0
    )
    init = _base_child(base_site, ["-c", INIT], env)
    error = _config_error(init)
    assert error["setting"] == "traces_exporter"
    assert error["source"] == (
        "default, as an OTLP endpoint is set by env OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    hint = f"pip install {package} (or this package's [otlp] extra)"
    assert hint in error["message"]
    for command, stream in (("config", "stderr"), ("doctor", "stdout")):
        result = _base_child(base_site, ["-m", "obskit", command], env)
        output = getattr(result, stream)
        assert result.returncode == 2, (result.stdout, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr
        assert "invalid setting traces_exporter='otlp'" in output
        assert hint in output
    console = _base_child(base_site, ["-c", INIT], {**env, "OTEL_TRACES_EXPORTER": "console"})
    assert console.returncode == 0, console.stderr  # needs no exporter package
