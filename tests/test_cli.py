"""The `obskit config` command: every effective setting, its value and its source."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from obskit.cli import main


def test_config_shows_values_and_sources(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each setting appears once with its source: argument, env var name or default."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", "shop")
    monkeypatch.setenv("OBSKIT_OTLP_HEADERS", "api-key=s3cret")
    assert main(["config", "--set", "environment=prod"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()}
    assert rows["service_name"] == ["shop", "env", "OTEL_SERVICE_NAME"]
    assert rows["environment"] == ["prod", "argument"]
    assert rows["otlp_timeout"] == ["10.0", "default"]
    assert rows["otlp_headers"] == ["api-key=***", "env", "OBSKIT_OTLP_HEADERS"]


def test_bad_config_exits_2_with_the_message(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad value exits with code 2 and the ConfigError message on stderr."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "sometimes")
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert "traces_sampler='sometimes' (from env OTEL_TRACES_SAMPLER)" in err
    assert main(["config", "--set", "oops"]) == 2


def test_console_script_runs_as_a_module() -> None:
    """`python -m obskit config` works in a fresh process (the `obskit` script's target)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OBSKIT_"))}
    result = subprocess.run(
        [sys.executable, "-m", "obskit", "config"],
        capture_output=True,
        text=True,
        env={**env, "OBSKIT_SERVICE_NAME": "cli"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "env OBSKIT_SERVICE_NAME" in result.stdout
