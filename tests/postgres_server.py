"""A real PostgreSQL server (Debian package ``postgresql``) for the tests: a fresh data
directory in a temporary folder, listening on 127.0.0.1 and a free port, run by an
unprivileged user (the package's ``postgres`` user when the tests run as root, which
PostgreSQL refuses to be). Started once per session by the :func:`postgres` fixture;
skipped where the package is not installed, but failed under ``CI=true`` (CI installs it).
"""

from __future__ import annotations

import glob
import importlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.prometheus_server import free_port
from tests.reliability.unavailable import unavailable

DATABASE = "obskit_test"
USER = "obskit"


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's ``bin`` directory (Debian keeps it off PATH)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        unavailable("PostgreSQL is not installed (apt-get install postgresql)")
    return Path(initdb).parent


@dataclass(frozen=True)
class Postgres:
    """A running server: connect with :attr:`dsn` (or the parts), as :data:`USER`."""

    host: str
    port: int
    user: str
    dbname: str

    @property
    def dsn(self) -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={self.dbname}"

    @property
    def url(self) -> str:
        """The URL SQLAlchemy takes, without its driver (``postgresql+psycopg://`` ...)."""
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}"


def _run_as(user: pwd.struct_passwd | None) -> dict[str, Any]:
    """Popen arguments that run a command as ``user`` (None: as ourselves)."""
    if user is None:
        return {}
    return {
        "user": user.pw_uid,
        "group": user.pw_gid,
        "extra_groups": [],
        "env": {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C.UTF-8",
            "HOME": user.pw_dir,
        },
    }


def _server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        unavailable("running as root and there is no 'postgres' user to run PostgreSQL as")


def _wait_ready(bindir: Path, port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"postgres exited: {log.read_text()}")
        ready = subprocess.run(
            [bindir / "pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)],
            timeout=10,
            check=False,
        )
        if ready.returncode == 0:
            return
        time.sleep(0.2)
    raise TimeoutError(f"postgres was not ready in 30 s: {log.read_text()}")


class _Server:
    """One running server and the test modules using it."""

    def __init__(self) -> None:
        self.bindir = postgres_bin()
        user = _server_user()
        as_user = _run_as(user)
        self.workdir = Path(tempfile.mkdtemp(prefix="obskit-postgres-"))
        data = self.workdir / "data"
        log = self.workdir / "postgres.log"
        if user is not None:
            os.chown(self.workdir, user.pw_uid, user.pw_gid)
        subprocess.run(
            [self.bindir / "initdb", "-D", data, "-U", USER, "--auth=trust", "-E", "UTF8", "-N"],
            check=True,
            capture_output=True,
            timeout=120,
            cwd=self.workdir,
            **as_user,
        )
        port = free_port()
        settings = [
            "listen_addresses=127.0.0.1",
            "unix_socket_directories=",
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
        ]
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                [self.bindir / "postgres", "-D", data, "-p", str(port)]
                + [part for setting in settings for part in ("-c", setting)],
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                **as_user,
            )
        try:
            _wait_ready(self.bindir, port, self.process, log)
            subprocess.run(
                [
                    self.bindir / "createdb",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    USER,
                    DATABASE,
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
        except BaseException:
            self.stop()
            raise
        self.info = Postgres("127.0.0.1", port, USER, DATABASE)
        self.users = 0

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)  # "fast" shutdown: open connections closed
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


#: The server while any test module uses it (each module that imports the fixture has a
#: session fixture of its own: they share one server).
_running: list[_Server] = []


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server for the session, with database :data:`DATABASE`."""
    if not _running:
        _running.append(_Server())
    server = _running[0]
    server.users += 1
    try:
        yield server.info
    finally:
        server.users -= 1
        if server.users == 0:
            _running.clear()
            server.stop()


def run_sql(server: Postgres, *statements: str) -> None:
    """Run ``statements`` on ``server`` (autocommit) with whichever driver is installed;
    skip the test when neither psycopg nor psycopg2 is."""
    for name in ("psycopg", "psycopg2"):
        try:
            driver = importlib.import_module(name)
        except ImportError:
            continue
        connection = driver.connect(server.dsn)
        try:
            connection.autocommit = True
            cursor = connection.cursor()
            for statement in statements:
                cursor.execute(statement)
        finally:
            connection.close()
        return
    pytest.skip("neither psycopg nor psycopg2 is installed")
