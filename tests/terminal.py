"""A command run on a real pseudo-terminal (Python's ``pty``), as a person runs it."""

from __future__ import annotations

import os
import select
import struct
import subprocess
import sys
import time
from collections.abc import Callable

from tests.servers import ROOT, clean_env


def run_on_terminal(
    args: list[str],
    env: dict[str, str] | None = None,
    columns: int = 80,
    timeout: float = 60,
    until: Callable[[str], bool] | None = None,
    then: Callable[[str], None] | None = None,
) -> tuple[int | None, str]:
    """Run ``python -m ARGS`` on a pty ``columns`` wide; return its exit code and output.

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
    process = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=clean_env(COLUMNS=str(columns), TERM="xterm", **(env or {})),
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
