"""The dedicated ``/metrics`` port: never the app's port by default; under gunicorn one
server per pod, a process beside the master that leaves with it; a thread in a single
process; a development reloader's watching process leaves the port to the app."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.prometheus_server import free_port
from tests.reliability.rig import flask_gunicorn
from tests.servers import Server

POST_ROUTE = 'http_route="/post/<int:post_id>"'
PORT = ("--port", "{port}")
APP = "examples.flask_app:create_app()"
APP_ON_PORT_1 = "examples.flask_app:create_app(metrics_port=1)"
BIND = ("--bind", "127.0.0.1:{port}")


def env_port(port: int) -> tuple[str, str]:
    """gunicorn's option setting OBSKIT_METRICS_PORT in its own environment."""
    return ("--env", f"OBSKIT_METRICS_PORT={port}")


def _app_status(server: Server, path: str) -> int:
    try:
        with urllib.request.urlopen(f"{server.url}{path}", timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _request_count(exposition: str, route: str = POST_ROUTE) -> float:
    """The merged request count of ``route`` in a scrape (0 when absent)."""
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith("http_server_request_duration_seconds_count{") and route in line:
            total += float(line.split("}")[1].split()[0])
    return total


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == str(pid):
            found.append(int(stat.parent.name))
    return sorted(found)


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                inodes.add(fields[9])
    return inodes


def _listeners(port: int, candidates: list[int]) -> list[int]:
    """Which of ``candidates`` hold the listening socket of ``port``."""
    inodes = _listening_inodes(port)
    holders = []
    for pid in candidates:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        sockets = {link[len("socket:[") : -1] for link in links if link.startswith("socket:")}
        if sockets & inodes:
            holders.append(pid)
    return holders


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaps, with its sockets closed, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _port_free(port: int) -> bool:
    """Nobody listens on ``port`` (a bind could still fail on TIME_WAIT connections)."""
    return not _listening_inodes(port)


def _wait(condition: object, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_gunicorn_pod_serves_merged_metrics_on_its_own_port_and_not_the_apps(
    tmp_path: Path,
) -> None:
    """With obskit's hooks and 2 workers, the app's /metrics is the app's own 404 and
    the dedicated port serves every worker's requests merged, from one process beside
    the master (no worker listens on it), obskit's fast-path gauge included; it keeps
    serving when both workers are killed,
    and the port is released when gunicorn stops."""
    server = flask_gunicorn(tmp_path / "pod", {"OTEL_TRACES_EXPORTER": "none"}, workers=2)
    try:
        assert _app_status(server, "/metrics") == 404
        for index in range(40):
            server.get(f"/post/{index}")
        exposition = server.scrape()
        assert _request_count(exposition) == 40
        # obskit's own state is in the workers' files too (the server has no registry)
        assert re.search(r'^obskit_fast_path_enabled\{path="spans"\} [01]\.0$', exposition, re.M)
        children = _children(server.process.pid)
        holders = _listeners(server.metrics_port, [server.process.pid, *children])
        assert len(holders) == 1
        (holder,) = holders
        assert "obskit._metrics.pod_server" in Path(f"/proc/{holder}/cmdline").read_text()
        workers = [pid for pid in children if pid != holder]
        assert len(workers) == 2
        for worker in workers:
            os.kill(worker, signal.SIGKILL)
        assert _wait(lambda: len(set(_children(server.process.pid)) - {holder, *workers}) == 2)
        server.get("/post/1")
        assert _request_count(server.scrape()) >= 41  # counters survive their workers
    finally:
        server.stop()
    assert _wait(lambda: _port_free(server.metrics_port))


@pytest.mark.slow
def test_the_pod_server_leaves_with_a_killed_master(tmp_path: Path) -> None:
    """SIGKILL to the gunicorn master (nothing of it runs any more): the metrics server
    process notices within seconds, exits and frees the port."""
    server = flask_gunicorn(tmp_path / "kill", {"OTEL_TRACES_EXPORTER": "none"}, workers=1)
    children: list[int] = []
    try:
        server.scrape()
        children = _children(server.process.pid)
        (holder,) = _listeners(server.metrics_port, children)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)
        assert _wait(lambda: not _alive(holder))
        assert _wait(lambda: _port_free(server.metrics_port))
    finally:
        for pid in children:  # the orphaned worker too (it leaves on its own, later)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        server.stop()


@pytest.mark.slow
def test_preloaded_app_init_in_the_master_starts_no_server_of_its_own(tmp_path: Path) -> None:
    """With --preload, init() runs in the gunicorn master: only the metrics server
    process listens on the port (neither the master nor a worker), and it serves."""
    server = Server(
        tmp_path,
        [
            "gunicorn",
            "-c",
            "examples/gunicorn.conf.py",
            "--preload",
            "--workers",
            "2",
            "--bind",
            "127.0.0.1:{port}",
            "examples.flask_app:create_app()",
        ],
        {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "multiproc"), "OTEL_TRACES_EXPORTER": "none"},
    )
    try:
        server.get("/post/1")
        assert _request_count(server.scrape()) == 1
        children = _children(server.process.pid)
        holders = _listeners(server.metrics_port, [server.process.pid, *children])
        assert len(holders) == 1
        assert "obskit._metrics.pod_server" in Path(f"/proc/{holders[0]}/cmdline").read_text()
    finally:
        server.stop()
    lines = server.lines()
    assert not [line for line in lines if "cannot serve /metrics" in line.get("event", "")]


@pytest.mark.slow
def test_a_single_process_serves_the_dedicated_port_from_a_thread(tmp_path: Path) -> None:
    """Under Flask's development server (one process), the app's /metrics is the app's
    own 404 and the dedicated port, served by the app's process, counts its requests."""
    server = Server(
        tmp_path,
        ["flask", "--app", "examples.flask_app:create_app()", "run", "--port", "{port}"],
        {"OTEL_TRACES_EXPORTER": "none"},
        ready_path="/post/1",
    )
    try:
        assert _app_status(server, "/metrics") == 404
        server.get("/post/2")
        assert _request_count(server.scrape()) == 2  # (the ready probe was one)
        assert _listeners(server.metrics_port, [server.process.pid]) == [server.process.pid]
    finally:
        server.stop()


@pytest.mark.slow
def test_a_reloaders_watching_process_leaves_the_port_to_the_app(tmp_path: Path) -> None:
    """`flask run --reload`: the watching process (it loads the app and calls init()
    too) releases the port, and the reloaded process that serves the app serves it,
    with the app's requests."""
    server = Server(
        tmp_path,
        ["flask", "--app", "examples.flask_app:create_app()", "run", "--reload", *PORT],
        {"OTEL_TRACES_EXPORTER": "none"},
        ready_path="/post/1",
    )
    try:
        children = _children(server.process.pid)
        assert len(children) == 1  # the reloaded process
        assert _wait(lambda: _listeners(server.metrics_port, children) == children, 30)
        assert _listeners(server.metrics_port, [server.process.pid]) == []
        before = _request_count(server.scrape())
        assert before >= 1  # the ready probe (a slow first reply may be asked again)
        server.get("/post/3")
        assert _request_count(server.scrape()) == before + 1
    finally:
        for pid in _children(server.process.pid):
            os.kill(pid, signal.SIGTERM)
        server.stop()
    # The reloaded process waited for the port without a warning: that is expected.
    lines = server.stdout_path.read_text().splitlines()  # (the debugger's lines are text)
    warnings = [json.loads(line) for line in lines if line.startswith("{") and "warning" in line]
    assert not [line for line in warnings if "/metrics" in line["event"]]


@pytest.mark.slow
def test_port_zero_serves_nothing_and_the_opt_in_serves_the_app_route(tmp_path: Path) -> None:
    """OBSKIT_METRICS_PORT=0 starts no server; OBSKIT_HTTP_SERVE_METRICS=true serves
    /metrics on the app's own port (under gunicorn: every worker's, merged)."""
    server = flask_gunicorn(
        tmp_path / "opt-in",
        {
            "OTEL_TRACES_EXPORTER": "none",
            "OBSKIT_METRICS_PORT": "0",
            "OBSKIT_HTTP_SERVE_METRICS": "true",
        },
        workers=2,
    )
    try:
        for index in range(6):
            server.get(f"/post/{index}")
        _, _, body = server.get("/metrics")
        assert _request_count(body.decode()) == 6
        children = _children(server.process.pid)
        assert len(children) == 2  # the workers, no metrics server process
        assert all("pod_server" not in Path(f"/proc/{pid}/cmdline").read_text() for pid in children)
    finally:
        server.stop()


def test_otel_prometheus_exporter_variables_set_the_port_and_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OTEL_EXPORTER_PROMETHEUS_PORT/HOST (OpenTelemetry's Prometheus exporter's
    variables) place the dedicated server when obskit's own are unset."""
    import obskit
    from tests.prometheus_server import free_port

    port = free_port()
    monkeypatch.delenv("OBSKIT_METRICS_PORT")
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", str(port))
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
    handle = obskit.init(service_name="otel-vars")
    assert handle.metrics_server is not None
    assert handle.metrics_server.serving
    obskit.counter("otel_vars_total", "Counted.").inc()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert re.search(rb"^otel_vars_total 1\.0$", reply.read(), re.M)
    assert handle.settings.sources["metrics_port"] == "env OTEL_EXPORTER_PROMETHEUS_PORT"


def test_default_port_is_9464_on_all_addresses_in_kubernetes_else_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without settings, the dedicated server is port 9464 (OpenTelemetry's Prometheus
    exporter's port), on 0.0.0.0 in Kubernetes and 127.0.0.1 elsewhere; the app's route
    is off."""
    from obskit._config.settings import load
    from obskit._metrics.server import bind_address

    monkeypatch.delenv("OBSKIT_METRICS_PORT")
    settings = load(os.environ, {})
    assert (settings.metrics_addr, settings.metrics_port) == ("auto", 9464)
    assert settings.http_serve_metrics is False
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert bind_address(settings.metrics_addr) == "127.0.0.1"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    assert bind_address(settings.metrics_addr) == "0.0.0.0"
    assert bind_address("::1") == "::1"


@pytest.mark.slow
def test_preload_without_obskits_hooks_leaves_the_port_to_the_worker(tmp_path: Path) -> None:
    """gunicorn --preload -w 1 without obskit's hooks: init() runs in the master, which
    serves nothing; the worker (which has the requests) serves the port."""
    server = Server(
        tmp_path,
        ["gunicorn", "--preload", "-w", "1", "--bind", "127.0.0.1:{port}", APP],
        {"OTEL_TRACES_EXPORTER": "none"},
    )
    try:
        server.get("/post/1")
        assert _request_count(server.scrape()) == 1
        workers = _children(server.process.pid)
        assert _listeners(server.metrics_port, [server.process.pid, *workers]) == workers
    finally:
        server.stop()


@pytest.mark.slow
def test_gunicorns_env_option_places_the_pods_server(tmp_path: Path) -> None:
    """`--env OBSKIT_METRICS_PORT=...` (applied by gunicorn after it reads its config
    file) is where the pod's server listens."""
    port = free_port()
    server = Server(
        tmp_path,
        ["gunicorn", "-c", "examples/gunicorn.conf.py", "-w", "2", *env_port(port), *BIND, APP],
        {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "multiproc"), "OTEL_TRACES_EXPORTER": "none"},
    )
    try:
        server.get("/post/1")
        server.metrics_url = f"http://127.0.0.1:{port}/metrics"
        assert _request_count(server.scrape()) == 1
    finally:
        server.stop()
    assert not [line for line in server.lines() if "not used" in line.get("event", "")]


@pytest.mark.slow
def test_a_replaced_on_starting_hook_is_named_in_a_warning(tmp_path: Path) -> None:
    """A gunicorn.conf.py that defines its own on_starting (without calling obskit's)
    starts no metrics server process, and each worker's init() says how to fix it."""
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(
        "from obskit.integrations.gunicorn import *  # noqa: F403\n\n"
        "def on_starting(server):\n    pass\n"
    )
    server = Server(
        tmp_path,
        ["gunicorn", "-c", str(config), "-w", "1", "--bind", "127.0.0.1:{port}", APP],
        {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "multiproc"), "OTEL_TRACES_EXPORTER": "none"},
    )
    try:
        server.get("/post/1")
        assert _listening_inodes(server.metrics_port) == set()
    finally:
        server.stop()
    events = [line["event"] for line in server.lines() if line.get("level") == "warning"]
    assert [event for event in events if "replaces obskit's on_starting hook" in event]


@pytest.mark.slow
def test_an_init_argument_for_the_port_under_the_hooks_is_named_in_a_warning(
    tmp_path: Path,
) -> None:
    """Under obskit's hooks the pod's port comes from gunicorn's environment: an app that
    passes init(metrics_port=...) is told, once per worker, that it is not used (and the
    pod's server still serves on the environment's port)."""
    server = Server(
        tmp_path,
        ["gunicorn", "-c", "examples/gunicorn.conf.py", "-w", "1", *BIND, APP_ON_PORT_1],
        {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "multiproc"), "OTEL_TRACES_EXPORTER": "none"},
    )
    try:
        server.get("/post/1")
        assert _request_count(server.scrape()) == 1
    finally:
        server.stop()
    events = [line["event"] for line in server.lines() if line.get("level") == "warning"]
    assert len([event for event in events if "are not used" in event]) == 1
