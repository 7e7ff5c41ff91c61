"""Prometheus and promtool for the monitoring tests: a real Prometheus that evaluates rule
files every second, and ``promtool check rules`` / ``promtool test rules``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.prometheus_server import Prometheus, free_port, prometheus_binary


def promtool_binary() -> str:
    """The promtool binary (Debian's ``prometheus`` package); skip if absent, fail under
    CI=true (CI installs it)."""
    binary = shutil.which("promtool")
    if binary is None:
        message = "promtool is not installed (apt-get install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def promtool(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``promtool args`` (output captured as text)."""
    return subprocess.run(
        [promtool_binary(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


class RulesPrometheus(Prometheus):
    """Prometheus scraping ``targets`` and evaluating ``rule_files`` every second."""

    def __init__(self, workdir: Path, targets: list[str], rule_files: list[Path]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(
            json.dumps(
                {
                    "global": {
                        "scrape_interval": "1s",
                        "scrape_timeout": "1s",
                        "evaluation_interval": "1s",
                    },
                    "rule_files": [str(path) for path in rule_files],
                    "scrape_configs": [
                        {"job_name": "obskit", "static_configs": [{"targets": targets}]}
                    ],
                }
            )
        )
        self._log = (workdir / "prometheus.log").open("w")
        self._process = subprocess.Popen(
            [
                prometheus_binary(),
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--enable-feature=exemplar-storage",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready(workdir)
        except BaseException:
            self.close()
            raise
