"""What ``obskit monitoring rules`` and ``obskit monitoring dashboard`` run: read the SLO
file, build the model, write the rules or the dashboard to a file or stdout.

A mistake in the SLO file (or in ``OBSKIT_HISTOGRAM_BUCKETS``) exits with code 2 and
the :class:`obskit.ConfigError` message, as ``obskit config`` does.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from obskit._monitoring import dashboard, rules, slo_spec
from obskit.exceptions import ConfigError

#: Output formats of ``obskit monitoring rules``.
RULE_FORMATS = ("rules", "prometheusrule")


def model(
    slo_file: str | None, environ: Mapping[str, str], window_scale: float = 1.0
) -> slo_spec.Model:
    """The model of ``slo_file`` (None: RED and health only).

    Raises:
        ConfigError: for a file that cannot be read or holds a mistake.
    """
    if slo_file is None:
        return slo_spec.build(None, "no SLO file", environ, window_scale)
    path = Path(slo_file)
    return slo_spec.build(slo_spec.read(path), f"file {path}", environ, window_scale)


def run_rules(
    slo_file: str | None,
    output: str | None,
    output_format: str = "rules",
    name: str = "",
    namespace: str = "",
    labels: Sequence[str] = (),
    window_scale: float = 1.0,
) -> int:
    """Write the Prometheus rules; return the exit code."""
    manifest_labels: dict[str, str] = {}
    for assignment in labels:
        key, sep, value = assignment.partition("=")
        if not sep or not key.strip():
            print(f"obskit: --label expects NAME=VALUE, got {assignment!r}", file=sys.stderr)
            return 2
        manifest_labels[key.strip()] = value.strip()
    try:
        built = model(slo_file, os.environ, window_scale)
    except ConfigError as error:
        print(f"obskit: {error}", file=sys.stderr)
        return 2
    if output_format == "prometheusrule":
        text = rules.prometheus_rule(built, name, namespace, manifest_labels)
    else:
        text = rules.rule_file(built)
    return _write(text, output)


def run_dashboard(slo_file: str | None, output: str | None) -> int:
    """Write the Grafana dashboard; return the exit code."""
    try:
        built = model(slo_file, os.environ)
    except ConfigError as error:
        print(f"obskit: {error}", file=sys.stderr)
        return 2
    return _write(dashboard.render(built), output)


def _write(text: str, output: str | None) -> int:
    if output is None or output == "-":
        sys.stdout.write(text)
        return 0
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as error:
        print(f"obskit: cannot write {output}: {error}", file=sys.stderr)
        return 1
    return 0
