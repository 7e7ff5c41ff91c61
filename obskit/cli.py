"""The ``obskit`` command: ``demo``, ``doctor``, and ``config`` (effective settings, sources)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from obskit._config import otel_env
from obskit._config.settings import load
from obskit.exceptions import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``obskit`` command line; return the exit code."""
    parser = argparse.ArgumentParser(prog="obskit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser(
        "config", help="print every effective setting with its value and source"
    )
    config.add_argument(
        "--set",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="pass a setting as if it were an init() argument (repeatable)",
    )
    demo = commands.add_parser(
        "demo", help="run a small instrumented app and show one request's three signals"
    )
    demo.add_argument("--serve", action="store_true", help="keep the demo app running")
    commands.add_parser("doctor", help="check the configuration and the pipeline end to end")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from obskit._tools import demo as _demo

        return _demo.run(serve=args.serve)
    if args.command == "doctor":
        from obskit._tools import doctor as _doctor

        return _doctor.run()
    return _config(args.set)


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
    rows = [("SETTING", "VALUE", "SOURCE")]
    for name, source in settings.sources.items():
        value: object = getattr(settings, name)
        if name == "otlp_headers":  # header values are often credentials
            value = dict.fromkeys(settings.otlp_headers, "***")
        rows.append((name, _show(value), source))
    rows.append(("(traces exporter in effect)", settings.resolved_traces_exporter, "derived"))
    # The OpenTelemetry SDK's own variables that are set (checked; obskit passes them on).
    for item, spec in otel_env.declared():
        source = settings.otel_env.source(item.name)
        if source != "default":
            rows.append((spec.name, _show(getattr(settings.otel_env, item.name)), source))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for name, shown, source in rows:
        print(f"{name:<{widths[0]}}  {shown:<{widths[1]}}  {source}")
    return 0


def _show(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, dict):
        return ",".join(f"{key}={item}" for key, item in value.items()) or "-"
    return str(value)
