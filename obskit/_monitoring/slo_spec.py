"""The SLO file: its format, its checks, and the :class:`Model` the rules and the
dashboard are generated from.

The file is YAML (read with PyYAML: ``pip install 'obskit-sdk[monitoring]'``) or JSON
(no extra needed); ``docs/monitoring.md`` documents every key. A mistake in it is an
:class:`obskit.ConfigError` naming the key (``slos[1].latency.threshold``), the value,
the file and what is allowed. A latency threshold must be a bound of the histogram
buckets the service uses (``histogram_buckets``: from the file, else
``OBSKIT_HISTOGRAM_BUCKETS``, else obskit's default), since a histogram can only tell
how many observations fell under one of its bounds.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obskit._config.settings import declared, default_of
from obskit._config.value_kinds import Buckets, Invalid
from obskit._monitoring import catalogue
from obskit._monitoring.catalogue import FUNCTION, HTTP_SERVER, TASK, Family
from obskit.exceptions import ConfigError

#: obskit's documentation of the alerts (each alert links its section).
RUNBOOK_URL = "https://obskit.readthedocs.io/en/latest/monitoring/"
#: The dashboard's uid (alerts link ``<grafana_url>/d/<uid>``).
DASHBOARD_UID = "obskit"


@dataclass(frozen=True)
class BurnRateAlert:
    """One row of the multi-window, multi-burn-rate table: alert with ``severity`` when
    the error budget burns ``burn_rate`` times too fast over both windows."""

    severity: str
    burn_rate: float
    long_window: float  # seconds
    short_window: float  # seconds
    for_: float = 0.0  # seconds


#: The SRE workbook's table (page: 2 % of a 30-day budget in 1 h, 5 % in 6 h; ticket:
#: 10 % in 1 day, 10 % in 3 days).
DEFAULT_ALERTS = (
    BurnRateAlert("page", 14.4, 3600, 300),
    BurnRateAlert("page", 6, 6 * 3600, 1800),
    BurnRateAlert("ticket", 3, 86400, 2 * 3600),
    BurnRateAlert("ticket", 1, 3 * 86400, 6 * 3600),
)


@dataclass(frozen=True)
class Slo:
    """One objective: the share of good events of one target over the SLO period."""

    name: str
    #: ``availability`` (good: not an error) or ``latency`` (good: under ``threshold``).
    kind: str
    #: ``route``, ``function``, ``task`` or ``service`` (every HTTP request).
    target: str
    #: The route template, function or task name; "" for the service.
    item: str
    #: The HTTP method of a route objective; "" for every method.
    method: str
    #: The share of good events wanted, as a ratio (``0.999``).
    objective: float
    #: Latency objectives: the bucket bound (seconds) a good event is under.
    threshold: float | None = None

    @property
    def family(self) -> Family:
        """The histogram this objective counts events in."""
        return {"function": FUNCTION, "task": TASK}.get(self.target, HTTP_SERVER)

    @property
    def matchers(self) -> tuple[str, ...]:
        """The label matchers choosing this objective's series in its histogram."""
        label = {"route": "http_route", "function": "function", "task": "task"}.get(self.target)
        found = []
        if label:
            found.append(f"{label}={catalogue.string(self.item)}")
        if self.method:
            found.append(f"http_request_method={catalogue.string(self.method)}")
        return tuple(found)

    @property
    def labels(self) -> dict[str, str]:
        """The labels every series and alert of this objective carries."""
        labels = {"slo": self.name, "slo_kind": self.kind}
        label = {"route": "http_route", "function": "function", "task": "task"}.get(self.target)
        if label:
            labels[label] = self.item
        if self.method:
            labels["http_request_method"] = self.method
        return labels

    @property
    def title(self) -> str:
        """What the objective is about, in words: ``route GET /users/<int:id>``."""
        if self.target == "service":
            return "every HTTP request"
        if self.target == "route":
            return f"route {self.method + ' ' if self.method else ''}{self.item}"
        return f"{self.target} {self.item}"


@dataclass(frozen=True)
class Model:
    """What the rules and the dashboard are generated from: the SLO file, checked."""

    service: str = ""
    #: Label matchers added to every query (``job="checkout"``), or "".
    selector: str = ""
    #: The labels kept when series are summed across pods and workers.
    group_by: tuple[str, ...] = ("namespace", "job")
    #: The SLO period (error budget), in seconds.
    period: float = 30 * 86400
    alerts: tuple[BurnRateAlert, ...] = DEFAULT_ALERTS
    slos: tuple[Slo, ...] = ()
    buckets: tuple[float, ...] = field(default_factory=tuple)
    grafana_url: str = ""
    runbook_url: str = RUNBOOK_URL
    #: Whether the dashboard links exemplars to profiles (Pyroscope).
    profiles: bool = True
    #: Every window, ``for`` and period is multiplied by this (tests run alerts in minutes).
    window_scale: float = 1.0

    def window(self, seconds: float) -> str:
        """A window as Prometheus reads it, scaled by ``window_scale``."""
        return catalogue.duration(seconds * self.window_scale)

    @property
    def dashboard_uid(self) -> str:
        """The dashboard's uid: ``obskit``, or ``obskit-<service>``."""
        return f"{DASHBOARD_UID}-{_slug(self.service)}" if self.service else DASHBOARD_UID

    @property
    def windows(self) -> tuple[float, ...]:
        """Every window an alert of the table reads, shortest first."""
        found = {5 * 60.0}  # the 5-minute ratio is recorded for the dashboard and period
        for alert in self.alerts:
            found.update((alert.long_window, alert.short_window))
        return tuple(sorted(found))


_TOP_KEYS = (
    "service",
    "selector",
    "group_by",
    "period",
    "histogram_buckets",
    "burn_rate_alerts",
    "grafana_url",
    "runbook_url",
    "profiles",
    "slos",
)
_SLO_KEYS = ("name", "route", "method", "function", "task", "availability", "latency")
_ALERT_KEYS = ("severity", "burn_rate", "long_window", "short_window", "for")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def read(path: Path) -> Any:
    """The raw content of an SLO file (JSON, or YAML with PyYAML installed)."""
    source = f"file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError("slo_file", str(path), "argument", f"a readable file ({error})") from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except ValueError as error:
            raise ConfigError("slo_file", str(path), source, f"valid JSON ({error})") from None
    try:
        yaml: Any = importlib.import_module("yaml")  # PyYAML: the [monitoring] extra
    except ImportError:
        raise ConfigError(
            "slo_file",
            str(path),
            source,
            "a JSON file (.json), or a YAML file with PyYAML installed",
            "pip install 'obskit-sdk[monitoring]'",
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError("slo_file", str(path), source, f"valid YAML ({error})") from None


def build(
    raw: Any,
    source: str,
    environ: Mapping[str, str],
    window_scale: float = 1.0,
) -> Model:
    """Check an SLO file's content (``raw``, from ``source``) and make the model.

    ``raw`` None (no file) makes the model of RED and health rules alone.

    Raises:
        ConfigError: for the first key that is wrong.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("slo_file", raw, source, "a mapping of the keys in docs/monitoring.md")
    _known(raw, _TOP_KEYS, "", source)
    service = _text(raw, "service", "", source)
    buckets, buckets_source = _buckets(raw, source, environ)
    alerts = _alerts(raw.get("burn_rate_alerts"), source)
    slos = _slos(raw.get("slos"), source, service, buckets, buckets_source, alerts)
    period = _duration(raw.get("period", "30d"), "period", source)
    if any(alert.long_window > period for alert in alerts):
        raise ConfigError(
            "period", raw.get("period", "30d"), source, "at least the longest alert window"
        )
    if not 0 < window_scale <= 1:
        raise ConfigError("window_scale", window_scale, "argument", "a number in (0, 1]")
    profiles = raw.get("profiles", True)
    if not isinstance(profiles, bool):
        raise ConfigError("profiles", profiles, source, "true or false")
    return Model(
        service=service,
        selector=_selector(raw.get("selector"), source),
        group_by=_group_by(raw.get("group_by"), source),
        period=period,
        alerts=alerts,
        slos=slos,
        buckets=buckets,
        grafana_url=_text(raw, "grafana_url", "", source).rstrip("/"),
        runbook_url=_text(raw, "runbook_url", RUNBOOK_URL, source),
        profiles=profiles,
        window_scale=window_scale,
    )


def _known(raw: Mapping[str, Any], keys: Sequence[str], where: str, source: str) -> None:
    for key in raw:
        if key not in keys:
            raise ConfigError(
                f"{where}{key}", raw[key], source, f"one of the keys {', '.join(keys)}"
            )


def _text(raw: Mapping[str, Any], key: str, default: str, source: str, where: str = "") -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{where}{key}", value, source, "text")
    return value.strip()


def _duration(value: Any, key: str, source: str) -> float:
    seconds = catalogue.parse_duration(value) if isinstance(value, str) else None
    if seconds is None:
        raise ConfigError(key, value, source, "a duration such as 5m, 1h, 3d or 30d")
    return seconds


def _selector(value: Any, source: str) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        matchers = []
        for label, text in value.items():
            if not isinstance(label, str) or not _LABEL.fullmatch(label):
                raise ConfigError(f"selector.{label}", text, source, "a label name")
            if not isinstance(text, str):
                raise ConfigError(f"selector.{label}", text, source, "text (the label's value)")
            matchers.append(f"{label}={catalogue.string(text)}")
        return ", ".join(matchers)
    if isinstance(value, str) and "{" not in value and "}" not in value:
        return value.strip()
    raise ConfigError(
        "selector",
        value,
        source,
        "a mapping of label values ({job: checkout}) or PromQL matchers without braces"
        ' (job="checkout", namespace=~"shop|cart")',
    )


def _group_by(value: Any, source: str) -> tuple[str, ...]:
    if value is None:
        return Model.group_by
    if not isinstance(value, list) or not all(
        isinstance(label, str) and _LABEL.fullmatch(label) for label in value
    ):
        raise ConfigError("group_by", value, source, "a list of label names")
    return tuple(value)


def _buckets(
    raw: Mapping[str, Any], source: str, environ: Mapping[str, str]
) -> tuple[tuple[float, ...], str]:
    """The histogram bounds the service uses, and where they were read."""
    item, spec = next((i, s) for i, s in declared() if i.name == "histogram_buckets")
    value: object = raw.get("histogram_buckets")
    where = source
    if value is None:
        for variable in spec.env:
            text = environ.get(variable, "")
            if text.strip():
                value, where = text, f"env {variable}"
                break
    if value is None:
        return default_of(item), "default"
    try:
        return Buckets().parse(value, where), where
    except Invalid as bad:
        raise ConfigError("histogram_buckets", value, where, bad.allowed, bad.hint) from None


def _alerts(value: Any, source: str) -> tuple[BurnRateAlert, ...]:
    if value is None:
        return DEFAULT_ALERTS
    if not isinstance(value, list) or not value:
        raise ConfigError("burn_rate_alerts", value, source, "a non-empty list of alert rows")
    rows = []
    for index, row in enumerate(value):
        where = f"burn_rate_alerts[{index}]."
        if not isinstance(row, dict):
            raise ConfigError(where[:-1], row, source, "a mapping of " + ", ".join(_ALERT_KEYS))
        _known(row, _ALERT_KEYS, where, source)
        severity = row.get("severity")
        if not isinstance(severity, str) or not _NAME.fullmatch(severity):
            raise ConfigError(f"{where}severity", severity, source, "a name such as page or ticket")
        rate = row.get("burn_rate")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0:
            raise ConfigError(f"{where}burn_rate", rate, source, "a positive number")
        long = _duration(row.get("long_window"), f"{where}long_window", source)
        short = _duration(row.get("short_window"), f"{where}short_window", source)
        if short >= long:
            raise ConfigError(
                f"{where}short_window", row.get("short_window"), source, "shorter than long_window"
            )
        wait = 0.0 if row.get("for") is None else _duration(row["for"], f"{where}for", source)
        rows.append(BurnRateAlert(severity, float(rate), long, short, wait))
    return tuple(rows)


def _slos(
    value: Any,
    source: str,
    service: str,
    buckets: tuple[float, ...],
    buckets_source: str,
    alerts: tuple[BurnRateAlert, ...],
) -> tuple[Slo, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError("slos", value, source, "a list of objectives")
    found: list[Slo] = []
    for index, entry in enumerate(value):
        where = f"slos[{index}]."
        if not isinstance(entry, dict):
            raise ConfigError(where[:-1], entry, source, "a mapping of " + ", ".join(_SLO_KEYS))
        _known(entry, _SLO_KEYS, where, source)
        targets = [key for key in ("route", "function", "task") if key in entry]
        if len(targets) > 1:
            raise ConfigError(
                where[:-1], entry, source, "at most one of route, function, task (none: service)"
            )
        target = targets[0] if targets else "service"
        item = _text(entry, target, "", source, where) if targets else ""
        if targets and not item:
            raise ConfigError(f"{where}{target}", entry[target], source, "a non-empty name")
        method = _text(entry, "method", "", source, where).upper()
        if method and target != "route":
            raise ConfigError(f"{where}method", entry["method"], source, "only with route")
        name = _text(entry, "name", "", source, where) or _slug(
            "-".join(part for part in (service, item or "service", method) if part)
        )
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"{where}name", name, source, "lowercase letters, digits, '-', '_' and '.'"
            )
        if "availability" not in entry and "latency" not in entry:
            raise ConfigError(where[:-1], entry, source, "an availability or latency objective")
        if "availability" in entry:
            objective = _objective(entry["availability"], f"{where}availability", source, alerts)
            found.append(
                Slo(f"{name}-availability", "availability", target, item, method, objective)
            )
        if "latency" in entry:
            latency = entry["latency"]
            if not isinstance(latency, dict):
                raise ConfigError(
                    f"{where}latency", latency, source, "a mapping of threshold and objective"
                )
            _known(latency, ("threshold", "objective"), f"{where}latency.", source)
            objective = _objective(
                latency.get("objective"), f"{where}latency.objective", source, alerts
            )
            threshold = _threshold(
                latency.get("threshold"),
                f"{where}latency.threshold",
                source,
                buckets,
                buckets_source,
            )
            found.append(
                Slo(f"{name}-latency", "latency", target, item, method, objective, threshold)
            )
    names = [slo.name for slo in found]
    for slo in found:
        if names.count(slo.name) > 1:
            raise ConfigError("slos", slo.name, source, "a distinct name for each objective")
    return tuple(found)


def _objective(value: Any, key: str, source: str, alerts: tuple[BurnRateAlert, ...]) -> float:
    """A percentage (``99.9`` or ``"99.9%"``) as a ratio; refused when an alert of the
    table could never fire (its burn rate times the budget is over 100 %)."""
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip().removesuffix("%"))
        except ValueError:
            number = None
    if number is None or not 0 < number < 100:
        raise ConfigError(key, value, source, "a percentage between 0 and 100, e.g. 99.9")
    ratio = round(number / 100, 12)
    impossible = [alert for alert in alerts if alert.burn_rate * (1 - ratio) >= 1]
    if impossible:
        raise ConfigError(
            key,
            value,
            source,
            f"an objective whose error budget ({catalogue.percent(1 - ratio)}) times each"
            f" alert's burn rate stays under 100 % (a {impossible[0].burn_rate:g}x burn"
            " could never be seen)",
            "raise the objective or give burn_rate_alerts with lower burn rates",
        )
    return ratio


def _threshold(
    value: Any,
    key: str,
    source: str,
    buckets: tuple[float, ...],
    buckets_source: str,
) -> float:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        seconds = catalogue.parse_duration(value)
        number = seconds
        if seconds is None:
            try:
                number = float(value)
            except ValueError:
                number = None
    bounds = ", ".join(f"{bound:g}" for bound in buckets)
    if number is None or not any(abs(number - bound) <= 1e-9 * bound for bound in buckets):
        raise ConfigError(
            key,
            value,
            source,
            f"one of the histogram bucket bounds in seconds: {bounds}"
            f" (histogram_buckets, from {buckets_source})",
            "a histogram counts observations under its bounds only; use one of them, or add"
            " the threshold to histogram_buckets in the app and in this file",
        )
    return next(bound for bound in buckets if abs(number - bound) <= 1e-9 * bound)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "service"
