"""The ``obskit`` command: ``demo``, ``doctor``, ``config`` (effective settings, sources),
``constraints`` (pins for installing contrib instrumentations), ``monitoring rules`` /
``monitoring dashboard`` (Prometheus rules and the Grafana dashboard) and ``profile`` (a
program run under the sampling profiler: its flame graph and pprof file)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from obskit._config import otel_env
from obskit._config.env_text import UNSET, env_text
from obskit._config.settings import Settings, declared, load
from obskit._tools import profile_cmd
from obskit._version import __version__
from obskit.exceptions import ConfigError, without_password

_DESCRIPTION = "obskit: correlated logs, metrics and traces for Python services."

_EPILOG = "Documentation: https://obskit.readthedocs.io"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``obskit`` command line; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="obskit",
        description=_DESCRIPTION,
        epilog=_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"obskit {__version__} (obskit-sdk)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run a small instrumented app and show one request's trace, logs and metrics",
        description="Start a small instrumented app on 127.0.0.1, send it a few requests and"
        " show one request's trace (a waterfall), its log lines and its histogram exemplar,"
        " joined by the trace id. Needs no collector or other service.",
    )
    demo.add_argument(
        "--serve",
        action="store_true",
        help="keep the app running and print each new request's waterfall (Ctrl-C stops)",
    )
    commands.add_parser(
        "doctor",
        help="check the configuration and the pipeline end to end",
        description="Send a test span, log line and histogram observation through the"
        " pipeline the environment configures, and say what works and how to fix what"
        " does not. Exit code 0 when every configured part works, 1 when one fails,"
        " 2 on bad configuration.",
    )
    config = commands.add_parser(
        "config",
        help="print every effective setting, where it came from and its variable",
        description="Print every setting with its source (argument, env or default), the"
        " environment variable that sets it and its value, spelt as that variable takes it."
        " A bad value exits with code 2 and the message init() would raise.",
    )
    config.add_argument(
        "--set",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="pass a setting as if it were an init() argument (repeatable)",
    )
    commands.add_parser(
        "constraints",
        help="print pins of the installed OpenTelemetry packages, for pip install -c",
        description="Print name==version for every installed OpenTelemetry distribution"
        " except the instrumentation packages: pass it to pip with -c when installing a"
        " contrib instrumentation, so pip picks the release that matches the installed"
        " API and SDK (or says none does) instead of moving them."
        " Example: pip install -c <(obskit constraints) opentelemetry-instrumentation-redis",
    )
    _add_monitoring(commands)
    profile_cmd.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "profile":
        return profile_cmd.run(args.target, args.hz, args.output, args.format)
    if args.command == "monitoring":
        from obskit._monitoring import command as _monitoring

        if args.what == "dashboard":
            return _monitoring.run_dashboard(args.slo, args.output)
        return _monitoring.run_rules(
            args.slo,
            args.output,
            args.format,
            args.name,
            args.namespace,
            args.label,
            args.window_scale,
        )
    if args.command == "constraints":
        return _constraints()
    if args.command == "demo":
        from obskit._tools import demo as _demo

        return _demo.run(serve=args.serve)
    if args.command == "doctor":
        from obskit._tools import doctor as _doctor

        return _doctor.run()
    return _config(args.set)


def _add_monitoring(commands: Any) -> None:
    """The ``monitoring`` command and its ``rules`` and ``dashboard`` subcommands."""
    monitoring = commands.add_parser(
        "monitoring",
        help="write Prometheus rules (RED, SLO burn-rate alerts, obskit health) or the"
        " Grafana dashboard",
        description="Generate monitoring for what obskit exports: recording rules, SLO"
        " alerts and obskit's health alerts (rules), or the Grafana dashboard (dashboard),"
        " from an optional SLO file. See the monitoring page of the documentation.",
    )
    what = monitoring.add_subparsers(dest="what", required=True, metavar="WHAT")
    rules = what.add_parser(
        "rules",
        help="Prometheus rules: a rule file, or a PrometheusRule manifest",
        description="Write recording rules (RED per route, function, task, outgoing call and"
        " database operation), per SLO the SLI rules and multi-window multi-burn-rate"
        " alerts, and obskit's health alerts. Exit code 2 on a mistake in the SLO file.",
    )
    dashboard = what.add_parser(
        "dashboard",
        help="the Grafana dashboard (JSON)",
        description="Write the Grafana dashboard: SLOs, RED per route, function and task,"
        " outgoing calls, databases and obskit's health, exemplars linked to traces, logs"
        " and profiles.",
    )
    for sub in (rules, dashboard):
        sub.add_argument(
            "--slo", metavar="FILE", help="the SLO file (YAML or JSON; none: no SLO rules)"
        )
        sub.add_argument(
            "-o", "--output", metavar="FILE", help="write to FILE (default: standard output)"
        )
    rules.add_argument(
        "--format",
        choices=("rules", "prometheusrule"),
        default="rules",
        help="a Prometheus rule file (default) or a prometheus-operator PrometheusRule",
    )
    rules.add_argument("--name", default="", help="the PrometheusRule's name")
    rules.add_argument("--namespace", default="", help="the PrometheusRule's namespace")
    rules.add_argument(
        "--label",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="a label of the PrometheusRule, e.g. release=prometheus (repeatable)",
    )
    rules.add_argument(
        "--window-scale",
        type=_fraction,
        default=1.0,
        metavar="FACTOR",
        help="for tests only: multiply every window, 'for' and the SLO period by FACTOR,"
        " a number or a fraction (1/60 turns 1h into 1m)",
    )


def _fraction(text: str) -> float:
    """``0.5`` or ``1/60`` as a float (argparse reports a ValueError as a usage error)."""
    top, sep, bottom = text.partition("/")
    return float(top) / float(bottom) if sep else float(text)


def _constraints() -> int:
    import importlib.metadata

    pins = set()
    for distribution in importlib.metadata.distributions():
        name = str(distribution.metadata["Name"] or "").lower().replace("_", "-")
        if name.startswith("opentelemetry-") and not name.startswith(
            "opentelemetry-instrumentation-"
        ):
            pins.add(f"{name}=={distribution.version}")
    sys.stdout.write("".join(f"{pin}\n" for pin in sorted(pins)))
    return 0


def _config(assignments: list[str]) -> int:
    overrides: dict[str, object] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        if not sep:
            print(f"obskit: --set expects NAME=VALUE, got {assignment!r}", file=sys.stderr)
            return 2
        overrides[name.strip()] = text
    try:
        settings = load(os.environ, overrides)
    except ConfigError as error:
        print(f"obskit: {error}", file=sys.stderr)
        return 2
    rows = [("SETTING", "SOURCE", "VARIABLE", "VALUE"), *_rows(settings)]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for setting, source, variable, value in rows:
        print(f"{setting:<{widths[0]}}  {source:<{widths[1]}}  {variable:<{widths[2]}}  {value}")
    return 0


def _rows(settings: Settings) -> list[tuple[str, str, str, str]]:
    """One row per setting: name, source, the variable behind it, its value as text."""
    rows = []
    for item, spec in declared():
        source = settings.sources[item.name]
        kind, _, variable = source.partition(" ")
        if kind == "env":
            value = os.environ.get(variable, "").strip()  # as the environment spells it
        else:
            value = env_text(getattr(settings, item.name))
            variable = spec.env[0] if spec.env else UNSET
        if item.name == "otlp_headers":  # header values are often credentials
            value = env_text(dict.fromkeys(settings.otlp_headers, "***"))
        value = str(without_password(value))  # (a URL user:password@)
        rows.append((item.name, kind, variable, value or UNSET))
    rows.append(
        ("traces_exporter (in effect)", "derived", UNSET, settings.resolved_traces_exporter)
    )
    # The OpenTelemetry SDK's own variables that are set (checked; obskit passes them on).
    for field, sdk_variable in otel_env.declared():
        if settings.otel_env.source(field.name) != "default":
            value = os.environ.get(sdk_variable.name, "").strip() or UNSET
            rows.append(("(read by the SDK)", "env", sdk_variable.name, value))
    return rows
