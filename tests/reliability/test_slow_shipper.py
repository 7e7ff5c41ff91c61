"""Scenario: a slow log shipper. stdout is a real pipe whose reader takes 64 KiB, then
pauses 300 ms (Fluent Bit under back-pressure) or stops reading altogether; obskit's
line writer buffers what the pipe cannot take (``log_buffer_bytes``), never blocks the
caller, writes each line whole or not at all, and counts every line it drops."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import obskit
from obskit.exceptions import ConfigError
from tests.prometheus_server import free_port
from tests.servers import ROOT, clean_env

CHUNK = 64 * 1024  # what the shipper reads before it pauses
PAUSE = 0.3
DEADLINE = 60.0  # seconds any one child (and its reader) may take
APP = "examples.flask_app:create_app()"

#: The child: init(), a burst of BURST_LINES lines with a BURST_PAD-character field as
#: fast as it can, optionally a fork, then shutdown(timeout=BURST_SHUTDOWN) (or none: the
#: exit hook flushes); its figures go to BURST_RESULT.
CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    import obskit
    from obskit._lifecycle import self_stats

    obskit.init(service_name="burst", log_format="json", traces_exporter="none")
    log = obskit.get_logger("burst")
    pad = "x" * int(os.environ["BURST_PAD"])
    started = time.monotonic()
    for n in range(int(os.environ["BURST_LINES"])):
        log.info("line", n=n, pad=pad)
    result = {"log_seconds": time.monotonic() - started}
    if os.environ.get("BURST_FORK"):
        pid = os.fork()
        if pid == 0:
            child = obskit.get_logger("forked")
            for n in range(int(os.environ["BURST_FORK"])):
                child.info("line", n=n, pad=pad)
            os._exit(0 if obskit.shutdown(timeout=DEADLINE) else 3)
        result["fork_status"] = os.waitpid(pid, 0)[1]
    if os.environ.get("BURST_SHUTDOWN"):
        began = time.monotonic()
        result["flushed"] = obskit.shutdown(timeout=float(os.environ["BURST_SHUTDOWN"]))
        result["shutdown_seconds"] = time.monotonic() - began
    result["dropped"] = {
        reason: self_stats.value("obskit_dropped", signal="logs", reason=reason)
        for reason in ("pipe_full", "write_error", "shutdown")
    }
    with open(os.environ["BURST_RESULT"], "w") as out:
        json.dump(result, out)
    """
).replace("DEADLINE", str(DEADLINE))


class Shipper:
    """Reads a pipe as a slow log shipper does: CHUNK bytes, then PAUSE seconds, until
    EOF (or DEADLINE); ``stalled`` (set) stops it reading until cleared."""

    def __init__(self, fd: int, pause: float = PAUSE, stalled: bool = False) -> None:
        self.fd = fd
        self.pause = pause
        self.data = bytearray()
        self.stalled = threading.Event()
        if stalled:
            self.stalled.set()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        deadline = time.monotonic() + DEADLINE
        taken = 0
        while time.monotonic() < deadline:
            if self.stalled.is_set():
                time.sleep(0.02)
                continue
            chunk = os.read(self.fd, CHUNK - taken)
            if not chunk:
                return
            self.data += chunk
            taken += len(chunk)
            if taken >= CHUNK:
                taken = 0
                time.sleep(self.pause)

    def join(self) -> bytes:
        self._thread.join(DEADLINE)
        assert not self._thread.is_alive(), "the pipe never reached EOF"
        return bytes(self.data)


def _burst(
    tmp_path: Path, env: dict[str, str], stalled: bool = False, transport: str = "pipe"
) -> tuple[bytes, dict[str, Any]]:
    """Run CHILD with stdout the write end of a pipe (or socket) and a Shipper on its read
    end (stalled until the child has finished if ``stalled``); what was read and the
    child's figures."""
    result = tmp_path / "result.json"
    read_end, write_end = os.pipe() if transport == "pipe" else _socket_pair()
    try:
        shipper = Shipper(read_end, stalled=stalled)
        try:
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD],
                cwd=ROOT,
                env=clean_env(BURST_RESULT=str(result), **env),
                stdout=write_end,
                stderr=subprocess.PIPE,
            )
        finally:
            os.close(write_end)  # the child holds it: EOF once it has exited
        try:
            _, errors = child.communicate(timeout=DEADLINE)
            assert child.returncode == 0, errors.decode()
            shipper.stalled.clear()
            data = shipper.join()
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    finally:
        os.close(read_end)
    figures = json.loads(result.read_text()) if result.exists() else {}
    return data, figures


def _socket_pair() -> tuple[int, int]:
    """(read end, write end) of a Unix stream socket pair, as plain descriptors."""
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return reader.detach(), writer.detach()


def _lines(data: bytes, logger: str = "burst") -> list[int]:
    """The ``n`` of every ``logger`` line, in order; every line must be whole JSON and
    the stream must end with a newline (no line was cut)."""
    *lines, rest = data.split(b"\n")
    assert rest == b"", f"an unterminated line at the end: {rest[:80]!r}"
    numbers = []
    for line in lines:
        event = json.loads(line)  # a corrupt line (two glued, one cut) fails here
        if event.get("logger") == logger:
            assert event["event"] == "line"
            numbers.append(event["n"])
    return numbers


def _pad_for(line_bytes: int) -> int:
    """The pad that makes one CHILD line about ``line_bytes`` long."""
    return line_bytes - 150


@pytest.mark.slow
@pytest.mark.parametrize(
    ("line_bytes", "lines", "ending"),
    [(200, 3200, "shutdown"), (6000, 106, "shutdown"), (200, 3200, "exit"), (6000, 106, "exit")],
)
def test_a_burst_within_the_buffer_reaches_a_paused_shipper_whole(
    tmp_path: Path, line_bytes: int, lines: int, ending: str
) -> None:
    """A burst of ~620 KiB into a 1 MiB buffer while the reader pauses 300 ms per 64 KiB:
    every line arrives once, in order, as valid JSON, whether shutdown() or the exit hook
    flushes it."""
    env = {
        "BURST_PAD": str(_pad_for(line_bytes)),
        "BURST_LINES": str(lines),
        "OBSKIT_LOG_BUFFER_BYTES": str(1024 * 1024),
        "OBSKIT_SHUTDOWN_TIMEOUT": str(DEADLINE),
    }
    if ending == "shutdown":
        env["BURST_SHUTDOWN"] = str(DEADLINE)
    data, figures = _burst(tmp_path, env)
    numbers = _lines(data)
    print(f"slow shipper {line_bytes} B lines ({ending}):", len(numbers), figures)
    assert numbers == list(range(lines))
    assert figures["dropped"] == {"pipe_full": 0, "write_error": 0, "shutdown": 0}
    if ending == "shutdown":
        assert figures["flushed"] is True


@pytest.mark.slow
def test_a_burst_reaches_a_paused_reader_of_a_stream_socket_whole(tmp_path: Path) -> None:
    """stdout a Unix stream socket (as journald connects it) whose reader pauses 300 ms
    per 64 KiB: ~620 KiB of 200-byte lines all arrive, in order, as valid JSON."""
    env = {
        "BURST_PAD": str(_pad_for(200)),
        "BURST_LINES": "3200",
        "BURST_SHUTDOWN": str(DEADLINE),
        "OBSKIT_LOG_BUFFER_BYTES": str(1024 * 1024),
    }
    data, figures = _burst(tmp_path, env, transport="socket")
    numbers = _lines(data)
    print("slow shipper socket:", len(numbers), figures)
    assert numbers == list(range(3200))
    assert figures["dropped"] == {"pipe_full": 0, "write_error": 0, "shutdown": 0}


@pytest.mark.slow
@pytest.mark.parametrize(("line_bytes", "lines"), [(200, 5000), (6000, 170)])
def test_a_burst_larger_than_the_buffer_drops_whole_lines_and_counts_them(
    tmp_path: Path, line_bytes: int, lines: int
) -> None:
    """A ~1 MiB burst into a 128 KiB buffer: the lines that arrive are whole and valid
    JSON, in order, each once, and every missing line is counted as pipe_full."""
    env = {
        "BURST_PAD": str(_pad_for(line_bytes)),
        "BURST_LINES": str(lines),
        "BURST_SHUTDOWN": str(DEADLINE),
        "OBSKIT_LOG_BUFFER_BYTES": str(128 * 1024),
    }
    data, figures = _burst(tmp_path, env)
    numbers = _lines(data)
    print(f"slow shipper overflow {line_bytes} B lines:", len(numbers), figures)
    assert numbers == sorted(set(numbers))
    assert figures["dropped"]["pipe_full"] > 0
    assert figures["dropped"]["pipe_full"] + len(numbers) == lines
    assert figures["flushed"] is True


@pytest.mark.slow
def test_shutdown_returns_by_its_deadline_with_a_stalled_reader_and_counts_the_rest(
    tmp_path: Path,
) -> None:
    """With a reader that stops reading, shutdown(timeout=1) returns after about a second
    and counts the lines it could not write as shutdown (the rest arrive whole once the
    reader resumes)."""
    lines = 2000
    env = {
        "BURST_PAD": str(_pad_for(200)),
        "BURST_LINES": str(lines),
        "BURST_SHUTDOWN": "1.0",
        "OBSKIT_SHUTDOWN_TIMEOUT": "1.0",
    }
    data, figures = _burst(tmp_path, env, stalled=True)
    numbers = _lines(data)
    print("slow shipper stalled shutdown:", len(numbers), figures)
    assert figures["shutdown_seconds"] < 1.0 + 2.0  # the deadline, plus a loaded machine
    assert figures["dropped"]["shutdown"] > 0
    assert figures["dropped"]["shutdown"] + len(numbers) == lines
    assert numbers == list(range(len(numbers)))


@pytest.mark.slow
def test_a_child_forked_with_lines_buffered_writes_its_own_and_the_parent_writes_its_once(
    tmp_path: Path,
) -> None:
    """A fork while the parent's buffer holds ~250 KiB: the child's lines and the
    parent's each arrive exactly once, whole."""
    env = {
        "BURST_PAD": str(_pad_for(200)),
        "BURST_LINES": "1300",
        "BURST_FORK": "400",
        "BURST_SHUTDOWN": str(DEADLINE),
    }
    data, figures = _burst(tmp_path, env)
    print("slow shipper fork:", figures)
    assert figures["fork_status"] == 0
    assert _lines(data, "burst") == list(range(1300))
    assert _lines(data, "forked") == list(range(400))


@pytest.mark.parametrize("value", [-1, 1.5, "lots", True, 2**31])
def test_a_bad_log_buffer_size_fails_init(value: object) -> None:
    """log_buffer_bytes that is not an integer in [0, 1 GiB] fails init() with ConfigError."""
    with pytest.raises(ConfigError) as caught:
        obskit.init(log_buffer_bytes=value)
    assert "log_buffer_bytes" in str(caught.value)


def test_a_bad_log_buffer_size_in_the_environment_fails_init(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OBSKIT_LOG_BUFFER_BYTES=4MiB (not a number) fails init() naming the variable."""
    monkeypatch.setenv("OBSKIT_LOG_BUFFER_BYTES", "4MiB")
    with pytest.raises(ConfigError) as caught:
        obskit.init()
    assert "OBSKIT_LOG_BUFFER_BYTES" in str(caught.value)


# --- gunicorn ------------------------------------------------------------------------


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            reply.read()
            return int(reply.status)
    except Exception:
        return 0


def _wait_for(port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _get(port, "/") == 200:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("version", ["22.0.0", "23.0.0", "newest"])
def test_gunicorn_replaces_killed_workers_while_its_output_pipe_is_stalled(
    tmp_path: Path, gunicorn_release: Callable[[str], Path], version: str
) -> None:
    """gunicorn 22, 23 and the newest (2 sync workers, obskit's config) with stdout and
    stderr on one pipe nobody reads: both workers SIGKILLed, the master logs it and boots
    two new workers that answer; once the reader resumes every line is whole (JSON from
    obskit, or one of gunicorn's own)."""
    release = gunicorn_release(version)
    read_end, write_end = os.pipe()
    try:
        output = _stalled_gunicorn(tmp_path, release, read_end, write_end)
    finally:
        os.close(read_end)
    # (Lines the killed workers still held are gone with them.)
    events = [json.loads(line) for line in output.splitlines() if not line.startswith("[")]
    shown = {event["post_id"] for event in events if event.get("event") == "showing post"}
    assert {1, 2} <= shown
    gunicorn_lines = [line for line in output.splitlines() if line.startswith("[")]
    if version != "newest":
        assert any(f"Starting gunicorn {version}" in line for line in gunicorn_lines)
    assert any("Perhaps out of memory?" in line for line in gunicorn_lines)
    assert sum("Booting worker" in line for line in gunicorn_lines) >= 4


def _stalled_gunicorn(tmp_path: Path, release: Path, read_end: int, write_end: int) -> str:
    """gunicorn writing to ``write_end`` (closed here once spawned) while nobody reads
    ``read_end``: requests, both workers killed and replaced; then all it wrote."""
    port = free_port()
    env = clean_env(
        PYTHONUNBUFFERED="1",
        OBSKIT_LOG_FORMAT="json",
        OBSKIT_TRACES_EXPORTER="none",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "multiproc"),
        PYTHONPATH=os.pathsep.join([str(release), str(ROOT)]),
    )
    command = ["gunicorn", "-c", "examples/gunicorn.conf.py", "--workers", "2"]
    try:
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)  # one page: full after a few lines
        server = subprocess.Popen(
            [sys.executable, "-m", *command, "--bind", f"127.0.0.1:{port}", APP],
            cwd=ROOT,
            env=env,
            stdout=write_end,
            stderr=write_end,
        )
    finally:
        os.close(write_end)  # gunicorn holds it: EOF once it has exited
    shipper = Shipper(read_end, pause=0)
    replaced: list[int] = []
    try:
        assert _wait_for(port, 30), "gunicorn did not start"
        shipper.stalled.set()
        for n in range(100):  # ~300 lines: far more than the stalled pipe holds
            assert _get(port, f"/post/{n}") == 200
        first = _workers(server)
        assert len(first) == 2
        for pid in first:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            replaced = [pid for pid in _workers(server) if pid not in first]
            if len(replaced) == 2 and _get(port, "/post/1") == 200:
                break
            time.sleep(0.2)
        print("gunicorn stalled pipe: workers", first, "->", replaced)
        assert len(replaced) == 2, "the killed workers were not replaced"
        assert _get(port, "/post/2") == 200  # answered by a worker booted while stalled
    finally:
        shipper.stalled.clear()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return shipper.join().decode()


def _workers(server: subprocess.Popen[bytes]) -> list[int]:
    """The gunicorn master's children (its workers), from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == str(server.pid):
            pids.append(int(stat.parent.name))
    return sorted(pids)
