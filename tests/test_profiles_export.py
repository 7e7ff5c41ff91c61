"""Where profiles go: a directory of pprof files kept under its size limit (newest kept,
written atomically, failures answered not raised), and Pyroscope's ingest API on a real
server that parses and validates requests as Pyroscope does (name and labels, times,
format, the decoded profile), with failures (down, 500, too slow) answered ``False``."""

from __future__ import annotations

import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import obskit
from obskit._lifecycle import internal_errors
from obskit._profiles import pprof
from obskit._profiles.export import (
    DirectoryWriter,
    PyroscopeClient,
    file_name,
    for_pyroscope,
    label_value,
    series_name,
)
from obskit._profiles.window import OVERFLOW_FRAME, Window
from tests.pyroscope_server import PyroscopeServer, serve, window_counts

START_NS = 1_740_823_702_123_456_789  # 2025-03-01T10:08:22.123456789Z
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"
FRAME = ("handle", "/app/views.py", 12)


def _window(start_ns: int = START_NS, samples: int = 5) -> Window:
    window = Window(start_ns, start_ns + 10_000_000_000, 10_000_000)
    labels = (
        ("http.route", "/users/<id>"),
        ("span_id", SPAN_ID),
        ("span_name", "GET /users/<id>"),
        ("thread_name", "MainThread"),
        ("trace_id", TRACE_ID),
    )
    window.counts[((FRAME,), labels)] = samples
    window.counts[((OVERFLOW_FRAME,), (("thread_name", "MainThread"),))] = 1
    window.overflow = 1
    return window


def _pyroscope_data() -> bytes:
    """A window encoded as obskit sends it to Pyroscope."""
    return pprof.encode(for_pyroscope(_window()))


@pytest.fixture
def pyroscope() -> Iterator[PyroscopeServer]:
    yield from serve()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---------------------------------------------------------------- the directory


def test_file_names_carry_the_utc_start_and_the_pid() -> None:
    """profile-<UTC start to the microsecond>-<pid>.pb.gz, sortable by time."""
    assert file_name(START_NS, 4242) == "profile-20250301T100822.123456Z-4242.pb.gz"
    assert file_name(START_NS + 10**9, 1) > file_name(START_NS, 99999)


def test_a_written_file_holds_the_profile(tmp_path: Path) -> None:
    """write() creates the directory and returns the file, which decodes to the window."""
    writer = DirectoryWriter(tmp_path / "new" / "profiles", 10**6)
    data = pprof.encode(_window())
    path = writer.write(data, START_NS)
    assert path == tmp_path / "new" / "profiles" / file_name(START_NS, os.getpid())
    assert path.read_bytes() == data
    assert window_counts(pprof.decode(path.read_bytes())) == _window().counts
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_rotation_keeps_the_directory_under_max_bytes_and_the_newest_files(
    tmp_path: Path,
) -> None:
    """After every write the profile files take at most max_bytes; the oldest go first."""
    data = [pprof.encode(_window(START_NS + i * 10**10, samples=i + 1)) for i in range(12)]
    limit = sum(len(d) for d in data[-3:]) + 10
    writer = DirectoryWriter(tmp_path, limit)
    written = []
    for i, profile in enumerate(data):
        path = writer.write(profile, START_NS + i * 10**10)
        assert path is not None
        written.append(path.name)
        sizes = [p.stat().st_size for p in tmp_path.iterdir()]
        assert sum(sizes) <= limit
        assert path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == written[-3:]


def test_rotation_deletes_only_profile_files(tmp_path: Path) -> None:
    """Files not named as obskit names its profiles stay, whatever their size."""
    (tmp_path / "notes.txt").write_bytes(b"x" * 5000)
    (tmp_path / "profile-keep-me.pb.gz").write_bytes(b"x" * 5000)
    old = tmp_path / file_name(START_NS - 10**12, 1)
    old.write_bytes(b"x" * 5000)
    data = pprof.encode(_window())
    path = DirectoryWriter(tmp_path, len(data) + 100).write(data, START_NS)
    assert path is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["notes.txt", "profile-keep-me.pb.gz", path.name]
    )


def test_the_newest_file_stays_even_when_others_are_being_deleted(tmp_path: Path) -> None:
    """A file another process deleted meanwhile is skipped, and the new file stays."""
    data = pprof.encode(_window())
    writer = DirectoryWriter(tmp_path, len(data))
    first = writer.write(data, START_NS)
    assert first is not None
    first.unlink()  # (another worker's rotation)
    second = writer.write(data, START_NS + 10**10)
    assert second is not None
    assert [p.name for p in tmp_path.iterdir()] == [second.name]


def test_a_stale_temporary_file_is_cleaned_up_and_a_fresh_one_left(tmp_path: Path) -> None:
    """A temporary file left over an hour ago by a dead writer is deleted; a recent one
    (another process writing now) is not."""
    stale = tmp_path / ".profile-x.pb.gz.dead.tmp"
    fresh = tmp_path / ".profile-y.pb.gz.busy.tmp"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    hours_ago = time.time() - 7200
    os.utime(stale, (hours_ago, hours_ago))
    assert DirectoryWriter(tmp_path, 10**6).write(pprof.encode(_window()), START_NS)
    assert not stale.exists()
    assert fresh.exists()


def test_an_unwritable_directory_returns_none_and_counts_an_error(tmp_path: Path) -> None:
    """A directory that cannot be created (a file is in the way) answers None; the error
    is counted for the profiles component, nothing raised."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    before = internal_errors.internal_errors().get("profiles", 0)
    writer = DirectoryWriter(blocker / "profiles", 10**6)
    assert writer.write(pprof.encode(_window()), START_NS) is None
    assert internal_errors.internal_errors().get("profiles", 0) == before + 1


def test_a_profile_larger_than_the_limit_is_not_written(tmp_path: Path) -> None:
    """A profile alone over max_bytes is refused (None, counted), the directory untouched."""
    old = tmp_path / file_name(START_NS - 10**12, 1)
    old.write_bytes(b"x" * 10)
    before = internal_errors.internal_errors().get("profiles", 0)
    assert DirectoryWriter(tmp_path, 20).write(pprof.encode(_window()), START_NS) is None
    assert [p.name for p in tmp_path.iterdir()] == [old.name]
    assert internal_errors.internal_errors().get("profiles", 0) == before + 1


# ---------------------------------------------------------------- Pyroscope


def test_pyroscope_receives_name_labels_times_and_the_profile(
    pyroscope: PyroscopeServer,
) -> None:
    """One POST /ingest: the app and its labels in name, from/until in Unix seconds
    around the window, format=pprof, sampleRate, spyName=obskit, the gzipped profile as
    the raw body with Content-Type binary/octet-stream."""
    labels = {"service_version": "1.2.3", "deployment_environment": "prod"}
    client = PyroscopeClient(pyroscope.url, "checkout", labels)
    window = for_pyroscope(_window())
    assert client.send(pprof.encode(window), window.start_ns, window.end_ns, 100.0) is True
    (ingest,) = pyroscope.received
    assert ingest.app == "checkout"
    assert ingest.labels == labels
    assert ingest.query["from"] == str(START_NS // 10**9)
    assert ingest.query["until"] == str(START_NS // 10**9 + 11)  # (the end, rounded up)
    assert ingest.query["format"] == "pprof"
    assert ingest.query["sampleRate"] == "100"
    assert ingest.query["spyName"] == "obskit"
    assert ingest.headers["content-type"] == "binary/octet-stream"
    assert ingest.headers["user-agent"].startswith("obskit/")
    assert ingest.body[:2] == b"\x1f\x8b"
    assert window_counts(ingest.profile) == window.counts
    assert client.last_error is None


def test_for_pyroscope_drops_trace_id_and_renames_labels_to_prometheus_names() -> None:
    """trace_id and thread_name (a series per trace, per thread) are dropped, http.route
    becomes http_route, span_id stays (Pyroscope's span profiles); the counts stay."""
    window = for_pyroscope(_window())
    labels = {labels for _, labels in window.counts}
    assert labels == {
        (
            ("http_route", "/users/<id>"),
            ("span_id", SPAN_ID),
            ("span_name", "GET /users/<id>"),
        ),
        (),
    }
    assert window.samples == _window().samples
    assert window.overflow == 1


def test_for_pyroscope_merges_samples_whose_labels_become_equal() -> None:
    """Two traces' samples of one stack become one sample once trace_id is gone."""
    window = Window(START_NS, START_NS + 1, 1)
    window.counts[((FRAME,), (("trace_id", "a" * 32),))] = 2
    window.counts[((FRAME,), (("trace_id", "b" * 32),))] = 3
    assert for_pyroscope(window).counts == {((FRAME,), ()): 5}


def test_pyroscope_refuses_raw_labels_that_for_pyroscope_fixes(
    pyroscope: PyroscopeServer,
) -> None:
    """The server refuses a profile with a sample label named http.route (not a
    Prometheus name), as Pyroscope does; the same window through for_pyroscope is taken."""
    client = PyroscopeClient(pyroscope.url, "checkout", {})
    raw = _window()
    assert client.send(pprof.encode(raw), raw.start_ns, raw.end_ns, 100) is False
    assert client.last_error == "http_400"
    assert "http.route" in pyroscope.refused[0]
    fixed = for_pyroscope(raw)
    assert client.send(pprof.encode(fixed), raw.start_ns, raw.end_ns, 100) is True


def test_hostile_names_and_labels_are_sent_in_pyroscope_syntax(
    pyroscope: PyroscopeServer,
) -> None:
    """An app name and labels with characters Pyroscope's name syntax refuses or reads
    as separators arrive sanitised: names with _ for the rest, values without ,{} and
    surrounding spaces; reserved names, service_name and empty values left out."""
    labels = {
        "deployment.environment": " prod ",
        "team,x}": "a,b}c{d",
        "__name__": "evil",
        "service_name": "other",
        "empty": "   ",
        "9lives": "cat",
        "unicode": "naïve ✓",
    }
    client = PyroscopeClient(pyroscope.url, "my shop!{x=y}", labels)
    window = for_pyroscope(_window())
    assert client.send(pprof.encode(window), window.start_ns, window.end_ns, 99.6)
    (ingest,) = pyroscope.received
    assert ingest.app == "my_shop__x_y_"
    assert ingest.labels == {
        "deployment_environment": "prod",
        "team_x_": "a_b_c_d",
        "_9lives": "cat",
        "unicode": "naïve ✓",
    }
    assert ingest.query["sampleRate"] == "100"


def test_label_values_are_cut_to_pyroscopes_limit_in_bytes() -> None:
    """A value longer than 2048 bytes is cut there, on a character boundary."""
    value = label_value("é" * 3000)
    assert len(value.encode()) <= 2048
    assert value == "é" * 1024


def test_at_most_twenty_labels_are_sent() -> None:
    """The name carries at most MAX_LABELS labels (Pyroscope limits labels per series)."""
    name = series_name("app", {f"k{i:02d}": "v" for i in range(40)})
    assert name.count("=") == 20


def test_basic_auth_and_tenant_header_are_sent(pyroscope: PyroscopeServer) -> None:
    """basic_auth becomes an Authorization header and tenant_id X-Scope-OrgID."""
    client = PyroscopeClient(
        pyroscope.url, "app", {}, basic_auth=("user", "s3cret"), tenant_id="team-a"
    )
    assert client.send(_pyroscope_data(), START_NS, START_NS + 1, 100)
    (ingest,) = pyroscope.received
    assert ingest.headers["authorization"] == "Basic dXNlcjpzM2NyZXQ="
    assert ingest.headers["x-scope-orgid"] == "team-a"


def test_credentials_in_the_endpoint_become_basic_auth_and_leave_the_url(
    pyroscope: PyroscopeServer,
) -> None:
    """user:password@ in the endpoint is sent as basic auth, never in the request URL."""
    endpoint = pyroscope.url.replace("http://", "http://user:s3cret@") + "/"
    client = PyroscopeClient(endpoint, "app", {})
    assert "s3cret" not in client.url
    assert client.url == f"{pyroscope.url}/ingest"
    assert client.send(_pyroscope_data(), START_NS, START_NS + 1, 100)
    assert pyroscope.received[0].headers["authorization"] == "Basic dXNlcjpzM2NyZXQ="


def test_an_endpoint_path_is_kept_before_ingest() -> None:
    """A base URL with a path (behind a proxy) gets /ingest appended to it."""
    client = PyroscopeClient("https://proxy.example/pyroscope/", "app", {})
    assert client.url == "https://proxy.example/pyroscope/ingest"


def test_a_non_http_endpoint_is_refused_at_construction() -> None:
    """Only http(s) URLs with a host are accepted."""
    with pytest.raises(ValueError, match="not an http"):
        PyroscopeClient("ftp://example.com", "app", {})


def test_a_server_that_is_down_answers_false(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listening: False, the reason connection_refused, one warning logged."""
    client = PyroscopeClient(f"http://127.0.0.1:{_free_port()}", "app", {}, timeout=2)
    before = internal_errors.internal_errors().get("profiles", 0)
    assert client.send(pprof.encode(_window()), START_NS, START_NS + 1, 100) is False
    assert client.send(pprof.encode(_window()), START_NS, START_NS + 1, 100) is False
    assert client.last_error == "connection_refused"
    warnings = [r for r in caplog.records if "could not send a profile" in r.getMessage()]
    assert len(warnings) == 1  # (rate-limited)
    assert internal_errors.internal_errors().get("profiles", 0) == before  # not obskit's bug


def test_a_server_error_answers_false(pyroscope: PyroscopeServer) -> None:
    """A 500 answer: False, the reason http_500."""
    pyroscope.status = 500
    client = PyroscopeClient(pyroscope.url, "app", {})
    assert client.send(pprof.encode(_window()), START_NS, START_NS + 1, 100) is False
    assert client.last_error == "http_500"


def test_a_slow_server_times_out_and_answers_false(pyroscope: PyroscopeServer) -> None:
    """A server that does not answer within the timeout: False, the reason timeout."""
    pyroscope.delay = 30
    client = PyroscopeClient(pyroscope.url, "app", {}, timeout=0.3)
    assert client.send(pprof.encode(_window()), START_NS, START_NS + 1, 100) is False
    assert client.last_error == "timeout"
    assert pyroscope.received == []


def test_the_ingest_request_is_not_traced(
    pyroscope: PyroscopeServer, spans: Callable[..., InMemorySpanExporter]
) -> None:
    """Sent inside a span with obskit's urllib.request instrumentation on, the ingest
    request makes no CLIENT span (instrumentation suppressed); a plain urllib request
    in the same span does."""
    exporter = spans(service_name="app")
    client = PyroscopeClient(pyroscope.url, "app", {})
    with obskit.span("work"):
        assert client.send(_pyroscope_data(), START_NS, START_NS + 1, 100)
        try:
            urllib.request.urlopen(f"{pyroscope.url}/other", data=b"", timeout=5)
        except urllib.error.HTTPError as error:  # (400: not /ingest)
            error.close()
    client_spans = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]
    assert len(client_spans) == 1
    assert client_spans[0].attributes is not None
    assert str(client_spans[0].attributes["url.full"]).endswith("/other")
    assert "traceparent" not in pyroscope.received[0].headers


def test_a_redirect_is_refused_and_the_credentials_go_nowhere(
    pyroscope: PyroscopeServer,
) -> None:
    """An ingest endpoint answering 302 towards another server: the send fails (False)
    and the other server receives nothing, credentials included."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(302)
            self.send_header("Location", f"{pyroscope.url}/ingest")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://user:secret@127.0.0.1:{server.server_address[1]}"
        client = PyroscopeClient(endpoint, "shop", {})
        data = pprof.encode(_window())
        assert client.send(data, START_NS, START_NS + 10**9, 100) is False
    finally:
        server.shutdown()
        server.server_close()
    assert pyroscope.received == []
    assert pyroscope.refused == []
