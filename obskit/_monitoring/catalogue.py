"""The metric families obskit exports, as the rules and the dashboard query them.

One :class:`Family` per histogram of the metric contract: its name, the labels that
identify one route / function / task / peer / operation, and the label matcher that
selects its failed events. PromQL text (label matchers, strings, durations, the ``le``
label of a bucket bound) is written here too, so every generated query spells them the
same way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import utils

#: How prometheus-client writes a bucket bound in ``le`` (its exposition's own function).
_go_float: Callable[[float], str] = utils.floatToGoString


@dataclass(frozen=True)
class Family:
    """A latency histogram obskit exports, and how its RED rules and panels read it."""

    #: Short name used in recording rule names: ``obskit:<key>_<events>:rate5m``.
    key: str
    #: Section title on the dashboard.
    title: str
    #: The histogram's name (``_count``/``_bucket`` are appended).
    histogram: str
    #: The labels that name one item (route and method, function, task, ...).
    by: tuple[str, ...]
    #: What one observation is, plural: ``requests``, ``calls``, ``runs``, ``operations``.
    events: str
    #: The matcher selecting failed observations; None: the metric has no outcome.
    errors: str | None
    #: What failed observations did, after "that" (dashboard) or a share (alerts).
    errors_text: str
    #: What one item is called in panel titles: ``route``, ``function``, ...
    item: str
    #: The legend of one item's line on a panel (Grafana's ``{{label}}`` syntax).
    legend: str


HTTP_SERVER = Family(
    key="http_server",
    title="HTTP server",
    histogram="http_server_request_duration_seconds",
    by=("http_route", "http_request_method"),
    events="requests",
    errors='http_response_status_code=~"5.."',
    errors_text="were answered with a 5xx status",
    item="route",
    legend="{{http_request_method}} {{http_route}}",
)
FUNCTION = Family(
    key="function",
    title="@traced functions",
    histogram="obskit_function_duration_seconds",
    by=("function",),
    events="calls",
    errors='outcome="error"',
    errors_text="raised an exception",
    item="function",
    legend="{{function}}",
)
TASK = Family(
    key="task",
    title="Celery tasks",
    histogram="obskit_task_duration_seconds",
    by=("task",),
    events="runs",
    errors='outcome=~"error|time_limit"',
    errors_text="failed or hit a time limit",
    item="task",
    legend="{{task}}",
)
HTTP_CLIENT = Family(
    key="http_client",
    title="Outgoing HTTP calls",
    histogram="http_client_request_duration_seconds",
    by=("server_address", "http_request_method"),
    events="requests",
    # An empty status (no response came) is an absent label to Prometheus: `=~"5..|"`.
    errors='http_response_status_code=~"5..|"',
    errors_text="got a 5xx status or no answer",
    item="server",
    legend="{{http_request_method}} {{server_address}}",
)
DB = Family(
    key="db",
    title="Databases",
    histogram="db_client_operation_duration_seconds",
    by=("db_system_name", "db_operation_name"),
    events="operations",
    errors=None,
    errors_text="",
    item="operation",
    legend="{{db_system_name}} {{db_operation_name}}",
)

#: Every family, in dashboard order.
FAMILIES = (HTTP_SERVER, FUNCTION, TASK, HTTP_CLIENT, DB)

#: Celery's task outcomes counter (every finished task, revoked ones included).
TASK_OUTCOMES = "obskit_tasks_total"
#: The quantiles recorded and drawn for every family.
QUANTILES = (0.5, 0.9, 0.99)


def string(text: str) -> str:
    """``text`` as a PromQL string literal (double quotes, Go escapes)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def selector(*matchers: str) -> str:
    """``{a, b}`` from the non-empty matchers (``""`` when there are none)."""
    kept = [matcher for matcher in matchers if matcher]
    return "{" + ", ".join(kept) + "}" if kept else ""


def by(labels: tuple[str, ...]) -> str:
    """``by (a, b)`` (``""`` for no labels: one series for everything)."""
    return f" by ({', '.join(labels)})" if labels else ""


def le_matcher(bound: float) -> str:
    """The ``le`` matcher of a bucket bound, whatever way it was spelt on the way in.

    prometheus-client writes ``1.0`` where Prometheus 3 stores ``1`` (it normalises the
    ``le`` label of classic histograms): both spellings (and Python's) are matched.
    """
    spellings = {_go_float(bound), repr(bound), format(bound, "g")}
    if bound == int(bound):
        spellings.add(str(int(bound)))
    if len(spellings) == 1:
        return f"le={string(spellings.pop())}"
    pattern = "|".join(re.sub(r"([.+])", r"[\1]", text) for text in sorted(spellings))
    return f"le=~{string(pattern)}"


_UNITS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0))
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float | None:
    """Seconds in a Prometheus-style duration (``5m``, ``1h30m``, ``3d``); None if bad."""
    text = text.strip()
    position = 0
    seconds = 0.0
    for found in _DURATION.finditer(text):
        if found.start() != position:
            return None
        seconds += float(found.group(1)) * _UNIT_SECONDS[found.group(2)]
        position = found.end()
    if position != len(text) or not text or seconds <= 0:
        return None
    return seconds


def duration(seconds: float) -> str:
    """A Prometheus duration for ``seconds``: whole units, largest first (``1h30m``);
    milliseconds below a second."""
    millis = max(1, round(seconds * 1000))
    if millis % 1000:
        return f"{millis}ms"
    left = millis // 1000
    parts = []
    for unit, size in _UNITS:
        count, left = divmod(left, int(size))
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def percent(ratio: float) -> str:
    """A ratio as a percentage without float noise: ``0.999`` -> ``99.9%``."""
    text = f"{ratio * 100:.6f}".rstrip("0").rstrip(".")
    return f"{text}%"


def number(value: float) -> str:
    """A float as short PromQL text (no float noise: ``1 - 0.999`` stays ``0.001``)."""
    if value == int(value) and math.isfinite(value):
        return str(int(value))
    return f"{value:.12g}"
