"""The Django test project under real servers (gunicorn with and without obskit's hooks,
uvicorn): the commands and a fixture that migrates a fresh database and starts them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.receivers import OtlpHttpReceiver
from tests.servers import ROOT, Server

GUNICORN_OPTIONS = [
    "--workers",
    "2",
    "--bind",
    "127.0.0.1:{port}",
    "--graceful-timeout",
    "5",
    "tests.djangoproj.wsgi:application",
]
COMMANDS = {
    "gunicorn": ["gunicorn", *GUNICORN_OPTIONS],
    # As deployed: obskit's hooks, so one /metrics port serves both workers' metrics.
    "gunicorn+hooks": ["gunicorn", "-c", "examples/gunicorn.conf.py", *GUNICORN_OPTIONS],
    "uvicorn": [
        "uvicorn",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--no-access-log",
        "tests.djangoproj.asgi:application",
    ],
}


@pytest.fixture
def django_server(
    tmp_path: Path, http_receiver: OtlpHttpReceiver
) -> Iterator[Callable[..., Server]]:
    """Migrate a fresh SQLite database, then serve the project with the named server
    (``env`` is added to the server's environment)."""
    database = tmp_path / "db.sqlite3"
    env = {
        "DJANGOPROJ_DB": str(database),
        "DJANGO_SETTINGS_MODULE": "tests.djangoproj.settings",
        "OTEL_EXPORTER_OTLP_ENDPOINT": http_receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OBSKIT_"))}
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--run-syncdb", "--verbosity", "0"],
        cwd=ROOT,
        env={**clean, **env, "OBSKIT_DISABLED": "true", "OBSKIT_METRICS_PORT": "0"},
        check=True,
        timeout=60,
    )
    started: list[Server] = []

    def start(kind: str, **extra: str) -> Server:
        if "-c" in COMMANDS[kind]:  # obskit's hooks: a multiprocess directory of its own
            extra = {
                "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"multiproc-{len(started)}"),
                **extra,
            }
        server = Server(tmp_path, COMMANDS[kind], {**env, **extra}, ready_path="/catalog/")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
