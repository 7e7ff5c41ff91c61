"""A real Prometheus server (Debian package `prometheus`) for the tests, on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest


def prometheus_binary() -> str:
    """The prometheus binary; skip if absent, but fail under CI=true (CI installs it)."""
    binary = shutil.which("prometheus")
    if binary is None:
        message = "the prometheus binary is not installed (apt-get install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Prometheus:
    """Prometheus scraping ``targets`` every second, with exemplar storage on, and
    evaluating ``rule_files`` (if any) every second."""

    def __init__(
        self,
        workdir: Path,
        targets: list[str],
        metrics_path: str = "/metrics",
        rule_files: list[Path] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        settings: dict[str, object] = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {
                    "job_name": "obskit",
                    "metrics_path": metrics_path,
                    "static_configs": [{"targets": targets}],
                }
            ],
        }
        if rule_files:
            settings["global"] = {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            }
            settings["rule_files"] = [str(path) for path in rule_files]
        config.write_text(json.dumps(settings))
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

    def _wait_ready(self, workdir: Path) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError((workdir / "prometheus.log").read_text())
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("prometheus did not become ready in 30 s")

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>; return its ``data``."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=5) as reply:
            body = json.loads(reply.read())
        assert body["status"] == "success", body
        return body["data"]

    def wait_for(self, path: str, timeout: float = 30, **params: Any) -> Any:
        """Poll ``api(path)`` until it returns a non-empty result."""
        deadline = time.monotonic() + timeout
        data: Any = None
        while time.monotonic() < deadline:
            data = self.api(path, **params)
            result = data.get("result") if isinstance(data, dict) else data
            if result:
                return data
            time.sleep(0.5)
        return data

    def close(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
        self._log.close()
