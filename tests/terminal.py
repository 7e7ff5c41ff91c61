"""A command run as a person runs it: ``obskit`` with its output piped
(:func:`run_obskit`), or any module on a real pseudo-terminal (Python's ``pty``,
:func:`run_on_terminal`; ``docs/pictures/make_pictures.py`` makes the docs' pictures
with it)."""

from __future__ import annotations

import os
import select
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.servers import ROOT, clean_env


def run_obskit(
    args: list[str], timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m obskit ARGS`` from the repository root with :func:`clean_env` plus
    ``env``, its output piped and captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "obskit", *args],
        cwd=ROOT,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_on_terminal(
    args: list[str],
    env: dict[str, str] | None = None,
    columns: int = 80,
    timeout: float = 60,
    until: Callable[[str], bool] | None = None,
    then: Callable[[str], None] | None = None,
    cwd: Path = ROOT,
) -> tuple[int | None, str]:
    """Run ``python -m ARGS`` in ``cwd`` on a pty ``columns`` wide; return its exit code
    and output. The environment is :func:`~tests.servers.clean_env` without a
    ``NO_COLOR`` of its own, plus ``env``.

    With ``until``, once the output so far satisfies it, ``then(output)`` runs (if
    given) and reading goes on until ``until`` is satisfied again by the new output,
    after which the process is interrupted (SIGINT) and its exit code is ``None`` if it
    does not end within 10 s (it is then killed)."""
    import fcntl
    import pty
    import signal
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    environment = clean_env(COLUMNS=str(columns), TERM="xterm")
    environment.pop("NO_COLOR", None)  # a person's terminal, unless ``env`` says otherwise
    process = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env={**environment, **(env or {})},
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    output = b""
    mark = 0  # where the output that `until` looks at begins
    poked = False
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.1)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not data:
                    break
                output += data
            elif process.poll() is not None:
                break
            if until is not None and until(output[mark:].decode("utf-8", "replace")):
                if then is not None and not poked:
                    poked, mark = True, len(output)
                    then(output.decode("utf-8", "replace"))
                    continue
                process.send_signal(signal.SIGINT)
                until = None
        code = process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        os.close(leader)
    return code, output.decode("utf-8", "replace").replace("\r\n", "\n")
