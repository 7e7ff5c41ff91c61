"""``obskit doctor``: check the configuration and the whole pipeline where it runs.

It emits a test span, a log line and a histogram observation, then reports whether
the OTLP endpoint accepted the span, whether the log line carries the span's trace
id, and whether ``/metrics`` exposes the observation's exemplar — each with a
one-line fix when it fails. Exit code 0 when everything that is configured works, 1
when a check fails, 2 on bad configuration.

The report is for a person: each result is printed as soon as it is known, a step
that may take a while says first what it waits for, a closed port is reported as
"connection refused" at once (a plain TCP connection is tried before any export), and
obskit's own log lines are kept out of it (a warning among them is shown as a note).
"""

from __future__ import annotations

import os
import sys
import urllib.request
from dataclasses import dataclass
from typing import TextIO

from obskit._config.settings import Settings, load
from obskit._lifecycle import runtime as _runtime
from obskit._lifecycle import self_stats as _self_stats
from obskit._terminal import escape_controls
from obskit.exceptions import ConfigError


@dataclass
class Check:
    """One line of the report."""

    name: str
    status: str  # "ok", "fail", "skip" or "note"
    detail: str
    hint: str = ""


def run(out: TextIO | None = None) -> int:
    """Run every check, printing each result as it comes; return the exit code."""
    report = _Report(out or sys.stdout)
    try:
        settings = load(os.environ, {})
    except ConfigError as error:
        report.write(Check("configuration", "fail", str(error)))
        return 2
    checked = len(settings.otel_env.sources)
    report.write(
        Check(
            "configuration",
            "ok",
            f"{len(settings.sources)} settings valid"
            + (f", {checked} OpenTelemetry SDK variable(s) checked" if checked else ""),
        )
    )
    _pipeline_checks(settings, report)
    report.finish()
    return 1 if report.failed else 0


class _Report:
    """Prints each check when it is done; a slow step shows what it waits for first.

    On a terminal the progress line is replaced by the result; elsewhere it stays, as a
    line of its own that starts with ``…``.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.failed = 0
        self._pending = False
        try:
            self._tty = out.isatty()
        except Exception:
            self._tty = False

    def progress(self, text: str) -> None:
        self.out.write(f"… {text}" + ("" if self._tty else "\n"))
        self.out.flush()
        self._pending = self._tty

    def write(self, check: Check) -> None:
        if self._pending:
            self.out.write("\r\x1b[K")
            self._pending = False
        mark = {"ok": "✓", "fail": "✗", "skip": "-", "note": "!"}[check.status]
        line = f"{mark} {check.name}: {check.detail}"
        if check.hint:
            line += f"\n    fix: {check.hint}"
        self.out.write(line + "\n")
        self.out.flush()
        self.failed += check.status == "fail"

    def finish(self) -> None:
        self.out.write(
            "all checks passed\n" if not self.failed else f"{self.failed} check(s) failed\n"
        )
        self.out.flush()


def _pipeline_checks(settings: Settings, report: _Report) -> None:
    from opentelemetry import trace

    from obskit._lifecycle.lazy_api import get_logger, histogram
    from obskit._logs import pipeline as _pipeline

    overrides: dict[str, object] = {}
    if settings.log_format == "auto":  # JSON, as where a log shipper reads stdout
        overrides["log_format"] = "json"
    unreachable: Check | None = None
    if not settings.disabled and settings.resolved_traces_exporter == "otlp":
        from obskit._traces.pipeline import traces_endpoint

        endpoint = traces_endpoint(settings)
        wait = min(settings.otlp_timeout, _CONNECT_TIMEOUT)
        report.progress(f"traces: connecting to {endpoint} (waiting up to {wait:g} s)")
        problem = _unreachable(endpoint, wait)
        if problem is not None:
            unreachable = Check(
                "traces",
                "fail",
                f"{endpoint}: {problem}",
                "start a collector there, or fix OTEL_EXPORTER_OTLP_ENDPOINT / "
                f"OTEL_EXPORTER_OTLP_PROTOCOL (now {settings.otlp_protocol})",
            )
            overrides["traces_exporter"] = "none"  # nothing to send the test span to
    # Every log line, from init() on, is kept for the checks rather than printed: the
    # report is for a person; a warning among them is shown as a note.
    writer = _pipeline.pipeline().writer
    lines: list[str] = []
    writer.capture = lines
    try:
        handle = _runtime.init(**overrides)
        if handle.disabled:
            report.write(
                Check(
                    "pipeline", "skip", "obskit is disabled (OTEL_SDK_DISABLED / OBSKIT_DISABLED)"
                )
            )
            return
        exported = _self_stats.value("obskit_spans_exported")
        failures = _export_errors()
        tracer = trace.get_tracer("obskit.doctor")
        with tracer.start_as_current_span("obskit.doctor") as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            get_logger("obskit.doctor").info("obskit doctor test line")
            histogram("obskit_doctor_seconds", "obskit doctor's test observation.").observe(0.001)
        exporter = handle.settings.resolved_traces_exporter
        if unreachable is not None:
            report.write(unreachable)
        elif exporter == "otlp":
            from obskit._traces.pipeline import traces_endpoint

            endpoint = traces_endpoint(handle.settings)
            wait = handle.settings.otlp_timeout + 2
            report.progress(f"traces: sending a test span to {endpoint} (waiting up to {wait:g} s)")
            handle.force_flush(timeout=wait)
            accepted = _self_stats.value("obskit_spans_exported") > exported
            if accepted and _export_errors() == failures:
                report.write(Check("traces", "ok", f"the span was accepted by {endpoint}"))
            else:
                reason = _export_error(lines) or "the exporter reported a failure"
                report.write(
                    Check(
                        "traces",
                        "fail",
                        f"{endpoint} did not accept the span: {reason}",
                        "start a collector there, or fix OTEL_EXPORTER_OTLP_ENDPOINT / "
                        f"OTEL_EXPORTER_OTLP_PROTOCOL (now {handle.settings.otlp_protocol})",
                    )
                )
        else:
            report.write(
                Check(
                    "traces",
                    "skip",
                    f"traces_exporter is {exporter!r}: spans are not sent anywhere",
                    "set OTEL_EXPORTER_OTLP_ENDPOINT to export them",
                )
            )
        report.write(_log_check(lines, trace_id))
        from obskit._metrics.server import bind_address

        port, addr = handle.settings.metrics_port, bind_address(handle.settings.metrics_addr)
        server = handle.metrics_server
        held = bool(port) and (server is None or not server.serving)
        if held:
            port = 0  # another process holds it (the app itself, say): check the registry
            report.progress(f"metrics: {addr}:{handle.settings.metrics_port} is in use")
        if port:
            report.progress(f"metrics: reading http://{_local(addr)}:{port}/metrics")
        report.write(_metrics_check(port, addr, trace_id))
        for check in _fast_path_checks():
            report.write(check)
    finally:
        _runtime.shutdown(timeout=2)
        writer.capture = None
    for note in _warnings(lines):
        report.write(Check("note", "note", note))


#: Seconds the first connection to the collector may take before doctor says so.
_CONNECT_TIMEOUT = 5.0


def _unreachable(url: str, timeout: float) -> str | None:
    """Why nothing can connect to ``url``'s host and port, or ``None`` if something can."""
    import socket
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "localhost"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return f"the port in {url!r} is not a number"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except ConnectionRefusedError:
        return f"connection refused (nothing listens on {host}:{port})"
    except socket.gaierror:
        return f"cannot resolve the host name {host!r}"
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:g} s (a firewall?)"
    except OSError as error:
        return f"cannot connect to {host}:{port}: {error.strerror or error}"


def _local(addr: str) -> str:
    return "127.0.0.1" if addr in ("0.0.0.0", "::", "") else addr


def _export_errors() -> float:
    return sum(
        amount
        for (name, _), amount in _self_stats.snapshot().items()
        if name == "obskit_export_errors"
    )


def _warnings(lines: list[str]) -> list[str]:
    """obskit's own warnings among the captured log lines, for a person to read."""
    import json

    notes = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        logger = str(record.get("logger", ""))
        if record.get("level") in ("warning", "error", "critical") and logger.startswith("obskit"):
            notes.append(escape_controls(str(record.get("event", "")))[:300])
    return notes


def _fast_path_checks() -> list[Check]:
    """One line per accelerator: on, or off and why (obskit works the same either way)."""
    from obskit._fast.status import statuses

    return [
        Check(f"fast path {status.path}", "ok", "on")
        if status.enabled
        else Check(
            f"fast path {status.path}",
            "skip",
            f"off ({status.reason}); its public-API path serves the same telemetry, slower",
        )
        for status in statuses()
    ]


def _export_error(lines: list[str]) -> str:
    import json

    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("level") in ("warning", "error") and "opentelemetry" in record.get(
            "logger", ""
        ):
            return str(record.get("event", ""))[:300]
    return ""


def _log_check(lines: list[str], trace_id: str) -> Check:
    import json

    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "obskit doctor test line":
            if record.get("trace_id") == trace_id:
                return Check("logs", "ok", "the log line is JSON and carries the span's trace_id")
            return Check(
                "logs",
                "fail",
                "the log line has no trace_id",
                "another logging setup replaced obskit's; call obskit.init() after it",
            )
    return Check(
        "logs",
        "fail",
        "no JSON log line was written",
        "set OBSKIT_LOG_FORMAT=json (the console format is for terminals)",
    )


def _metrics_check(port: int | None, addr: str, trace_id: str) -> Check:
    from obskit._metrics.registry import store

    if port:
        url = f"http://{_local(addr)}:{port}/metrics"
        request = urllib.request.Request(url, headers={"Accept": "application/openmetrics-text"})
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                text = reply.read().decode()
        except OSError as error:
            return Check(
                "metrics", "fail", f"{url} is not reachable: {error}", "check OBSKIT_METRICS_PORT"
            )
        where = url
    else:
        from prometheus_client.openmetrics import exposition

        generate: object = exposition.generate_latest
        text = generate(store().exposition()).decode()  # type: ignore[operator]
        where = "obskit's registry"
    if f'trace_id="{trace_id}"' in text:
        return Check("metrics", "ok", f"{where} exposes the exemplar")
    return Check(
        "metrics",
        "fail",
        f"{where} has no exemplar for the test observation",
        "Prometheus must scrape with OpenMetrics; check that nothing else serves /metrics",
    )
