"""The `obskit` command line: `--version`, its help, and `obskit config` (every
effective setting, its source, its variable and its value)."""

from __future__ import annotations

import pytest

from obskit._version import __version__
from obskit.cli import main
from tests.terminal import run_obskit


def _rows(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in out.splitlines()}


def test_config_shows_source_variable_and_value(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each setting appears once with its source, the variable behind it (the one that
    set it, else the one to set) and its value; header values stay hidden."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", "shop")
    monkeypatch.setenv("OBSKIT_OTLP_HEADERS", "api-key=s3cret")
    assert main(["config", "--set", "environment=prod"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["SETTING", "SOURCE", "VARIABLE", "VALUE"]
    rows = _rows(out)
    assert rows["service_name"] == ["env", "OTEL_SERVICE_NAME", "shop"]
    assert rows["environment"] == ["argument", "OBSKIT_ENVIRONMENT", "prod"]
    assert rows["otlp_timeout"] == ["default", "OBSKIT_OTLP_TIMEOUT", "10.0"]
    assert rows["otlp_headers"] == ["env", "OBSKIT_OTLP_HEADERS", "api-key=***"]
    assert "s3cret" not in out


def test_config_spells_values_as_the_environment_does(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Booleans are true/false, lists comma-separated, unset values `-`, and a value from
    the environment is shown as it was written there (milliseconds stay milliseconds)."""
    monkeypatch.setenv("OBSKIT_LOG_STDLIB", "off")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")
    assert main(["config"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["http_access_log"] == ["default", "OBSKIT_HTTP_ACCESS_LOG", "true"]
    assert rows["capture_pii"] == ["default", "OBSKIT_CAPTURE_PII", "false"]
    assert rows["log_stdlib"] == ["env", "OBSKIT_LOG_STDLIB", "off"]
    assert rows["otlp_timeout"] == ["env", "OTEL_EXPORTER_OTLP_TIMEOUT", "2500"]
    assert rows["propagators"][-1] == "tracecontext,baggage"
    assert rows["http_excluded_paths"][-1] == "-"
    assert rows["service_version"] == ["default", "OBSKIT_SERVICE_VERSION", "-"]


def test_bad_config_exits_2_with_the_message(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad value exits with code 2 and the ConfigError message on stderr."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "sometimes")
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert "traces_sampler='sometimes' (from env OTEL_TRACES_SAMPLER)" in err
    assert main(["config", "--set", "oops"]) == 2


def test_version_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`obskit --version` prints obskit's version and exits 0."""
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"obskit {__version__} (obskit-sdk)"


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["doctor", "--help"]])
def test_help_is_plain_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """The help texts carry no reST markup (double backticks, roles)."""
    with pytest.raises(SystemExit):
        main(argv)
    text = capsys.readouterr().out
    assert "usage: obskit" in text
    assert "``" not in text
    assert ":func:" not in text


def test_config_as_a_command_prints_only_the_table() -> None:
    """`python -m obskit config` in a fresh process: the first line is the table's
    header (no log line before it), exit 0."""
    result = run_obskit(["config"], OBSKIT_SERVICE_NAME="cli")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("SETTING ")
    assert _rows(result.stdout)["service_name"] == ["env", "OBSKIT_SERVICE_NAME", "cli"]
    assert result.stderr == ""
