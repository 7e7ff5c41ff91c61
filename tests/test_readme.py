"""The README, followed literally by a newcomer: a clean copy of the repository, a fresh
virtualenv, the README's first command, then its quickstart as pasted."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.prometheus_server import free_port
from tests.servers import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
#: Long enough for pip to install the dependencies from its cache or the index.
INSTALL_TIMEOUT = 600


def _blocks(kind: str) -> list[str]:
    return [block.strip() for block in re.findall(rf"```{kind}\n(.*?)```", README, re.S)]


def _clean_copy(target: Path) -> None:
    """The repository's files as a clone has them (tracked, or new and not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if name.startswith(".hypothesis/") or not source.is_file():
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name)


def _environment(venv: Path) -> dict[str, str]:
    """A shell with the virtualenv activated, as `source venv/bin/activate` leaves it."""
    skipped = ("OTEL_", "OBSKIT_", "COVERAGE_", "PYTHON", "VIRTUAL_ENV", "PROMETHEUS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skipped)}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["OBSKIT_METRICS_PORT"] = "0"  # no /metrics server on 0.0.0.0:9464 (the app has one)
    return env


def _shell(command: str, cwd: Path, env: dict[str, str], timeout: float) -> str:
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (command, result.stdout[-3000:], result.stderr[-3000:])
    return result.stdout


@pytest.mark.slow
def test_a_newcomer_follows_the_readme(tmp_path: Path) -> None:
    """In a fresh virtualenv and a clean copy: the README's first command installs the
    project and runs the demo, which shows a trace, its log line and its exemplar under
    one trace id, the failing request and the next step; the quickstart's install, app
    and commands, as pasted, print the request's log lines and its trace on the console,
    and the metrics URL it gives serves the request's latency histogram with the trace id
    as its exemplar (the app listens on a free port through FLASK_RUN_PORT instead of
    5000, its /metrics on another through OBSKIT_METRICS_PORT instead of 9464)."""
    first, install_flask, start, request = _blocks("bash")[:4]
    assert first == "pip install -e . && obskit demo"
    assert install_flask == "pip install -e '.[flask]'"
    assert start == "OTEL_TRACES_EXPORTER=console flask --app app run"
    assert request == "curl -X POST http://127.0.0.1:5000/orders/42/pay"
    (app_code,) = _blocks("python")
    metrics_url = re.search(r"`(http://127\.0\.0\.1:\d+/metrics)`", README)
    assert metrics_url is not None, "the README gives no URL for the metrics"

    clone = tmp_path / "obskit"
    _clean_copy(clone)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], timeout=120, check=True)
    env = _environment(venv)

    demo = _shell(first, clone, env, INSTALL_TIMEOUT)
    (trace_id, failing, _slow) = re.findall(r"^trace ([0-9a-f]{32}) ", demo, re.M)
    assert f'"trace_id": "{trace_id}"' in demo  # a log line of that request
    assert re.search(rf'_bucket\{{.*\}} \S+ # \{{.*trace_id="{trace_id}"\}}', demo)  # exemplar
    assert re.search(rf"^trace {failing} .* 1 error$", demo, re.M)
    assert "Next:" in demo

    _shell(install_flask, clone, env, INSTALL_TIMEOUT)
    workdir = tmp_path / "app"
    workdir.mkdir()
    (workdir / "app.py").write_text(app_code + "\n", encoding="utf-8")
    port, metrics_port = free_port(), free_port()
    out_path, err_path = workdir / "stdout.log", workdir / "stderr.log"
    with out_path.open("w") as out, err_path.open("w") as err:
        server = subprocess.Popen(
            ["bash", "-c", start],  # bash execs a lone command: SIGINT reaches flask
            cwd=workdir,
            env={
                **env,
                "FLASK_RUN_PORT": str(port),
                "OBSKIT_METRICS_PORT": str(metrics_port),
                "OBSKIT_METRICS_ADDR": "127.0.0.1",
            },
            stdout=out,
            stderr=err,
        )
        try:
            url = request.split()[-1].replace(":5000/", f":{port}/")
            answer = _post_when_up(url, server)
            assert json.loads(answer) == {"ok": True}
            time.sleep(0.5)  # the access line and the trace are written as the request ends
            local = metrics_url.group(1).replace(":5000/", f":{port}/")
            metrics = _scrape(local.replace(":9464/", f":{metrics_port}/"), server)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
    lines = [json.loads(line) for line in out_path.read_text().splitlines() if line[:1] == "{"]
    charged = next(line for line in lines if line["event"] == "card charged")
    access = next(line for line in lines if line["event"] == "POST /orders/42/pay 200")
    assert charged["order_id"] == 42
    assert charged["trace_id"] == access["trace_id"]
    waterfall = err_path.read_text()
    assert f"trace {charged['trace_id']} " in waterfall  # your own trace, on the console
    assert "\nPOST /orders/<int:order_id>/pay " in waterfall
    assert "\n  app.charge " in waterfall
    assert re.search(  # the request's latency, with its trace id as the exemplar
        r'^http_server_request_duration_seconds_bucket\{[^}]*http_route="/orders/<int:order_id>'
        rf'/pay"[^}}]*\}} \S+ # \{{[^}}]*trace_id="{charged["trace_id"]}"',
        metrics,
        re.M,
    ), metrics


def _post_when_up(url: str, server: subprocess.Popen[bytes]) -> bytes:
    """POST to ``url`` once the app answers (at most 60 s); the app's answer."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, "the quickstart app exited"
        try:
            request = urllib.request.Request(url, data=b"", method="POST")
            with urllib.request.urlopen(request, timeout=10) as reply:
                return bytes(reply.read())
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(url)


def _scrape(url: str, server: subprocess.Popen[bytes]) -> str:
    """``url`` in OpenMetrics (as Prometheus asks), once it answers with the pay route's
    latency histogram (at most 10 s); the body."""
    request = urllib.request.Request(url, headers={"Accept": "application/openmetrics-text"})
    deadline = time.monotonic() + 10
    while True:
        assert server.poll() is None, "the quickstart app exited"
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                text = str(reply.read().decode())
            if "/orders/<int:order_id>/pay" in text or time.monotonic() > deadline:
                return text
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{url} answered {error.code}") from error
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)
