"""gunicorn with several workers and no multiprocess directory: one warning with the fix;
and every gunicorn command the docs give counts every worker's requests."""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from obskit._metrics import gunicorn_check
from tests.prometheus_server import free_port
from tests.servers import ROOT, Server, clean_env

DOCS = ROOT / "docs"


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> _Lines:
    monkeypatch.setattr(gunicorn_check, "_warned", False)
    handler = _Lines()
    logger = logging.getLogger("tests.gunicorn_check")
    logger.addHandler(handler)
    logger.propagate = False
    return handler


def test_no_warning_outside_gunicorn(log: _Lines) -> None:
    """Without gunicorn's SERVER_SOFTWARE, the check logs nothing."""
    gunicorn_check.warn_if_misconfigured(logging.getLogger("tests.gunicorn_check"), {})
    assert log.messages == []


def test_no_warning_with_a_multiprocess_directory(log: _Lines) -> None:
    """Under gunicorn with PROMETHEUS_MULTIPROC_DIR set, the check logs nothing."""
    environ = {"SERVER_SOFTWARE": "gunicorn/23.0.0", "PROMETHEUS_MULTIPROC_DIR": "/tmp/x"}
    gunicorn_check.warn_if_misconfigured(logging.getLogger("tests.gunicorn_check"), environ)
    assert log.messages == []


@pytest.mark.parametrize(
    ("argv", "cmd_args", "workers"),
    [
        (["gunicorn", "-w", "4", "app:app"], "", 4),
        (["gunicorn", "--workers=3", "app:app"], "", 3),
        (["gunicorn", "-w2", "app:app"], "", 2),
        (["gunicorn", "app:app"], "--workers 5 --bind 127.0.0.1:8000", 5),
        (["gunicorn", "-w", "2", "app:app"], "--workers 5", 2),  # the command line wins
        (["gunicorn", "app:app"], "", None),
    ],
)
def test_the_command_line_gives_the_worker_count(
    argv: list[str], cmd_args: str, workers: int | None
) -> None:
    """Outside gunicorn's own frames, -w/--workers on the command line (else in
    GUNICORN_CMD_ARGS) gives the number of workers."""
    found = gunicorn_check.gunicorn_workers(None, argv, {"GUNICORN_CMD_ARGS": cmd_args})
    assert found == (workers, None)


def test_several_workers_by_the_command_line_warn_once(
    log: _Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under gunicorn, -w 3 and no multiprocess directory: one warning naming the fix,
    however often init() runs."""
    monkeypatch.setattr("sys.argv", ["gunicorn", "-w", "3", "app:app"])
    logger = logging.getLogger("tests.gunicorn_check")
    for _ in range(3):
        gunicorn_check.warn_if_misconfigured(logger, {"SERVER_SOFTWARE": "gunicorn/23.0.0"})
    (message,) = log.messages
    assert message.startswith("obskit: gunicorn runs 3 workers but PROMETHEUS_MULTIPROC_DIR")
    assert "`from obskit.integrations.gunicorn import *` in gunicorn.conf.py" in message


def _gunicorn(tmp_path: Path, *args: str) -> Server:
    return Server(
        tmp_path,
        ["gunicorn", "--bind", "127.0.0.1:{port}", *args],
        env={"PROMETHEUS_MULTIPROC_DIR": ""},
        ready_path="/post/1",
    )


def _warnings(server: Server) -> list[dict[str, object]]:
    return [line for line in server.lines() if "PROMETHEUS_MULTIPROC_DIR" in str(line["event"])]


@pytest.mark.slow
@pytest.mark.parametrize("preload", [False, True], ids=["per-worker-init", "preload"])
def test_gunicorn_with_several_workers_and_no_hooks_warns_once(
    tmp_path: Path, preload: bool
) -> None:
    """A real gunicorn with 3 workers and no hooks file: exactly one warning line, at
    level warning from logger obskit, with the fix."""
    args = [
        "--workers",
        "3",
        *(["--preload"] if preload else []),
        "examples.flask_app:create_app()",
    ]
    server = _gunicorn(tmp_path, *args)
    try:
        time.sleep(1.0)  # every worker has booted and initialised
    finally:
        server.stop()
    (warning,) = _warnings(server)
    assert warning["level"] == "warning"
    assert warning["logger"] == "obskit"
    assert "gunicorn runs 3 workers" in str(warning["event"])
    assert "gunicorn -c gunicorn.conf.py" in str(warning["event"])


@pytest.mark.slow
def test_gunicorn_with_one_worker_or_the_hooks_does_not_warn(tmp_path: Path) -> None:
    """One worker without hooks, and three with obskit's hooks file: no warning."""
    single = _gunicorn(tmp_path, "examples.flask_app:create_app()")
    single.stop()
    hooked = _gunicorn(
        tmp_path,
        "-c",
        "examples/gunicorn.conf.py",
        "--workers",
        "3",
        "examples.flask_app:create_app()",
    )
    hooked.stop()
    assert _warnings(single) == []
    assert _warnings(hooked) == []


def _documented_commands() -> list[str]:
    """Every gunicorn command line in a ```bash block of the docs and the README that
    serves the example app (the others name an app of the reader's)."""
    texts = [path.read_text(encoding="utf-8") for path in [ROOT / "README.md", *DOCS.glob("*.md")]]
    blocks = [block for text in texts for block in re.findall(r"```bash\n(.*?)```", text, re.S)]
    return [
        line.strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip().startswith("gunicorn ") and "examples." in line
    ]


@pytest.mark.slow
@pytest.mark.parametrize("command", _documented_commands())
def test_documented_gunicorn_command_counts_every_workers_requests(
    tmp_path: Path, command: str
) -> None:
    """The command as the docs give it (bound to a free port instead of 8000, its
    /metrics port to another): the pod's /metrics counts all 40 requests whatever worker
    served them, and no warning is logged."""
    args = shlex.split(command)[1:]
    server = Server(
        tmp_path, ["gunicorn", *args, "--bind", "127.0.0.1:{port}"], env={}, ready_path="/post/1"
    )
    try:
        for _ in range(40):
            server.get("/post/2")
        body = server.scrape(accept="text/plain")
    finally:
        server.stop()
    count = re.search(
        r'^http_server_request_duration_seconds_count\{[^}]*http_route="/post/<int:post_id>"'
        r"[^}]*\} (\S+)$",
        body,
        re.M,
    )
    assert count is not None, body
    assert float(count.group(1)) >= 41  # the readiness probe's request and the 40
    assert _warnings(server) == []


def test_the_docs_give_a_gunicorn_command_for_the_example_app() -> None:
    """The Flask page's gunicorn command is found (so the test above runs it)."""
    assert "gunicorn -c examples/gunicorn.conf.py 'examples.flask_app:create_app()'" in (
        _documented_commands()
    )


@pytest.mark.slow
def test_the_quickstarts_gunicorn_command_counts_every_workers_requests(tmp_path: Path) -> None:
    """The quickstart's app.py and gunicorn.conf.py, and its command as written (bound to
    a free port, its /metrics port to another): the pod's /metrics counts all 40 requests
    across the 4 workers, and no warning."""
    page = (DOCS / "quickstart.md").read_text(encoding="utf-8")
    (app_code,) = re.findall(r"```python\n(.*?)```", page, re.S)
    (conf,) = re.findall(r'```python title="gunicorn.conf.py"\n(.*?)```', page, re.S)
    (command,) = [
        line
        for block in re.findall(r"```bash\n(.*?)```", page, re.S)
        for line in block.splitlines()
        if line.startswith("gunicorn ")
    ]
    assert command == "gunicorn -c gunicorn.conf.py -w 4 app:app"
    (tmp_path / "app.py").write_text(app_code, encoding="utf-8")
    (tmp_path / "gunicorn.conf.py").write_text(conf, encoding="utf-8")
    port, metrics_port = free_port(), free_port()
    env = clean_env(
        PYTHONPATH=str(ROOT),
        OBSKIT_LOG_FORMAT="json",
        PROMETHEUS_MULTIPROC_DIR="",
        OBSKIT_METRICS_PORT=str(metrics_port),
        OBSKIT_METRICS_ADDR="127.0.0.1",
    )
    out_path = tmp_path / "stdout.log"
    with out_path.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", *shlex.split(command), "--bind", f"127.0.0.1:{port}"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
            _wait_for(f"{base}/", server)  # the app answers (404: it has no "/" route)
            for n in range(40):
                request = urllib.request.Request(f"{base}/orders/{n}/pay", data=b"", method="POST")
                with urllib.request.urlopen(request, timeout=10) as reply:
                    reply.read()
            metrics = _wait_for(metrics_url, server)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
    count = re.search(
        r'^http_server_request_duration_seconds_count\{[^}]*"/orders/<int:order_id>/pay"'
        r"[^}]*\} (\S+)$",
        metrics,
        re.M,
    )
    assert count is not None, metrics
    assert float(count.group(1)) == 40
    assert "PROMETHEUS_MULTIPROC_DIR" not in out_path.read_text()


def _wait_for(url: str, server: subprocess.Popen[bytes]) -> str:
    """GET ``url`` once something answers it (an HTTP error status is an answer; at most
    30 s); the body."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, "gunicorn exited"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return str(reply.read().decode())
        except urllib.error.HTTPError as error:
            return str(error.read().decode())
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(url)
