"""The ``obskit`` command: ``demo``, ``doctor``, ``config`` (effective settings, sources) and
``constraints`` (pins for installing contrib instrumentations)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from obskit._config import otel_env
from obskit._config.env_text import UNSET, env_text
from obskit._config.settings import Settings, declared, load
from obskit._version import __version__
from obskit.exceptions import ConfigError

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
    args = parser.parse_args(argv)
    if args.command == "constraints":
        return _constraints()
    if args.command == "demo":
        from obskit._tools import demo as _demo

        return _demo.run(serve=args.serve)
    if args.command == "doctor":
        from obskit._tools import doctor as _doctor

        return _doctor.run()
    return _config(args.set)


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
