"""Small filesystems for the metrics-directory fault tests: a tmpfs mounted by the test.

Mounting needs root (and a kernel that lets this container mount): without it the tests
that need a real full or read-only filesystem skip with the reason, and fail under
``CI=true`` (CI runs them as root).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from tests.reliability.unavailable import unavailable


def _unavailable(reason: str) -> NoReturn:
    unavailable(f"cannot mount a tmpfs here: {reason}")


@contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` (``mount -o size=...``) mounted at ``path`` for the block,
    unmounted after it (lazily, so a process still holding files cannot stop that)."""
    if os.geteuid() != 0:
        _unavailable("not running as root")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        _unavailable("mount(8) is not installed")
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        _unavailable(done.stderr.strip() or f"mount exited with {done.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30, check=False)


def remount(path: Path, options: str) -> None:
    """``mount -o remount,OPTIONS`` of the tmpfs at ``path`` (e.g. ``size=4m`` or ``ro``)."""
    subprocess.run(
        ["mount", "-o", f"remount,{options}", str(path)],
        capture_output=True,
        timeout=30,
        check=True,
    )


def fill(directory: Path, name: str = "ballast") -> Path:
    """Write a file into ``directory`` until the filesystem is full; return its path."""
    ballast = directory / name
    chunk = b"\0" * 4096
    with ballast.open("wb", buffering=0) as handle:
        for _ in range(1 << 20):  # at most 4 GiB: far beyond any tmpfs these tests mount
            try:
                handle.write(chunk)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                break
    return ballast


@contextmanager
def read_only_directory(path: Path) -> Iterator[Path]:
    """A directory no process of this user can write to: a read-only tmpfs as root (root
    writes through permissions), else a directory with mode 0555 (restored after)."""
    if os.geteuid() == 0:
        with tmpfs(path, "1m", read_only=True) as mounted:
            yield mounted
        return
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    try:
        yield path
    finally:
        path.chmod(0o755)
