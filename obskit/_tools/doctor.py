"""``obskit doctor``: check the configuration and the whole pipeline where it runs.

It emits a test span, a log line and a histogram observation, then reports whether
the OTLP endpoint accepted the span, whether the log line carries the span's trace
id, and whether ``/metrics`` exposes the observation's exemplar — each with a
one-line fix when it fails. Exit code 0 when everything that is configured works.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from dataclasses import dataclass
from typing import TextIO

from obskit._config.settings import load
from obskit._lifecycle import runtime as _runtime
from obskit._lifecycle import self_stats as _self_stats
from obskit.exceptions import ConfigError


@dataclass
class Check:
    """One line of the report."""

    name: str
    status: str  # "ok", "fail" or "skip"
    detail: str
    hint: str = ""


def run(out: TextIO | None = None) -> int:
    """Run every check and print the report; return the exit code."""
    out = out or sys.stdout
    try:
        settings = load(os.environ, {})
    except ConfigError as error:
        out.write(f"✗ configuration: {error}\n")
        return 2
    checked = len(settings.otel_env.sources)
    checks = [
        Check(
            "configuration",
            "ok",
            f"{len(settings.sources)} settings valid"
            + (f", {checked} OpenTelemetry SDK variable(s) checked" if checked else ""),
        )
    ]
    checks += _pipeline_checks()
    for check in checks:
        mark = {"ok": "✓", "fail": "✗", "skip": "-"}[check.status]
        line = f"{mark} {check.name}: {check.detail}"
        if check.hint:
            line += f"\n    fix: {check.hint}"
        out.write(line + "\n")
    failed = [check for check in checks if check.status == "fail"]
    out.write("all checks passed\n" if not failed else f"{len(failed)} check(s) failed\n")
    return 1 if failed else 0


def _pipeline_checks() -> list[Check]:
    from opentelemetry import trace

    from obskit._lifecycle.lazy_api import get_logger, histogram
    from obskit._logs import pipeline as _pipeline

    handle = _runtime.init()
    checks: list[Check] = []
    if handle.disabled:
        _runtime.shutdown()
        return [
            Check("pipeline", "skip", "obskit is disabled (OTEL_SDK_DISABLED / OBSKIT_DISABLED)")
        ]
    writer = _pipeline.pipeline().writer
    lines: list[str] = []
    exported = _self_stats.value("obskit_spans_exported")
    failures = sum(
        amount
        for (name, _), amount in _self_stats.snapshot().items()
        if name == "obskit_export_errors"
    )
    writer.capture = lines
    try:
        tracer = trace.get_tracer("obskit.doctor")
        with tracer.start_as_current_span("obskit.doctor") as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            get_logger("obskit.doctor").info("obskit doctor test line")
            histogram("obskit_doctor_seconds", "obskit doctor's test observation.").observe(0.001)
        settings = handle.settings
        exporter = settings.resolved_traces_exporter
        if exporter == "otlp":
            from obskit._traces.pipeline import traces_endpoint

            endpoint = traces_endpoint(settings)
            handle.force_flush(timeout=settings.otlp_timeout + 2)
            now_failed = sum(
                amount
                for (name, _), amount in _self_stats.snapshot().items()
                if name == "obskit_export_errors"
            )
            if _self_stats.value("obskit_spans_exported") > exported and now_failed == failures:
                checks.append(Check("traces", "ok", f"the span was accepted by {endpoint}"))
            else:
                reason = _export_error(lines) or "the exporter reported a failure"
                checks.append(
                    Check(
                        "traces",
                        "fail",
                        f"{endpoint} did not accept the span: {reason}",
                        "start a collector there, or fix OTEL_EXPORTER_OTLP_ENDPOINT / "
                        f"OTEL_EXPORTER_OTLP_PROTOCOL (now {settings.otlp_protocol})",
                    )
                )
        else:
            checks.append(
                Check(
                    "traces",
                    "skip",
                    f"traces_exporter is {exporter!r}: spans are not sent anywhere",
                    "set OTEL_EXPORTER_OTLP_ENDPOINT to export them",
                )
            )
    finally:
        writer.capture = None
    checks.append(_log_check(lines, trace_id))
    checks.append(
        _metrics_check(handle.settings.metrics_port, handle.settings.metrics_addr, trace_id)
    )
    checks += _fast_path_checks()
    _runtime.shutdown(timeout=2)
    return checks


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
        host = "127.0.0.1" if addr in ("0.0.0.0", "::", "") else addr
        url = f"http://{host}:{port}/metrics"
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
        where = "obskit's registry (serve it with metrics_port or your app's /metrics)"
    if f'trace_id="{trace_id}"' in text:
        return Check("metrics", "ok", f"{where} exposes the exemplar")
    return Check(
        "metrics",
        "fail",
        f"{where} has no exemplar for the test observation",
        "Prometheus must scrape with OpenMetrics; check that nothing else serves /metrics",
    )
