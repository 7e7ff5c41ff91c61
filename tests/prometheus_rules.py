"""promtool for the monitoring tests: ``promtool check rules`` / ``promtool test rules``
(the Prometheus that evaluates rule files is tests.prometheus_server's)."""

from __future__ import annotations

import shutil
import subprocess

from tests.reliability.unavailable import unavailable


def promtool_binary() -> str:
    """The promtool binary (Debian's ``prometheus`` package); skip if absent, fail under
    CI=true (CI installs it)."""
    binary = shutil.which("promtool")
    if binary is None:
        unavailable("promtool is not installed (apt-get install prometheus)")
    return binary


def promtool(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``promtool args`` (output captured as text)."""
    return subprocess.run(
        [promtool_binary(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
