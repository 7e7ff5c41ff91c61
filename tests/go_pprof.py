"""``go tool pprof`` (Debian package ``golang-go``) for the tests: it reads a profile file
offline and prints its reports."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.reliability.unavailable import unavailable

#: Seconds one ``go tool pprof`` run may take (its first run builds nothing: pprof ships
#: compiled with the Go distribution).
TIMEOUT = 60.0


def go_binary() -> str:
    """The go binary; skip if absent, but fail under CI=true (CI installs it)."""
    binary = shutil.which("go")
    if binary is None:
        unavailable("the go binary is not installed (apt-get install golang-go)")
    return binary


def pprof(profile: Path, *options: str) -> str:
    """What ``go tool pprof <options> <profile>`` prints (fails the test if it fails)."""
    home = profile.parent / "go-home"
    home.mkdir(exist_ok=True)
    environment = {
        **os.environ,
        # pprof writes nothing we need; keep its caches and any network use out.
        "HOME": str(home),
        "GOPATH": str(home / "go"),
        "GOCACHE": str(home / "cache"),
        "GOFLAGS": "-mod=mod",
        "GOPROXY": "off",
        "PPROF_TMPDIR": str(home),
        "PPROF_BINARY_PATH": str(home),
    }
    process = subprocess.Popen(
        [go_binary(), "tool", "pprof", *options, str(profile)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, f"go tool pprof {' '.join(options)} failed:\n{err}"
    return out
