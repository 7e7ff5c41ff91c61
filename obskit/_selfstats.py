"""obskit's own counters (exported spans, errors, drops, overflows), kept without
prometheus-client so any module can count; ``_metrics`` exposes them as ``obskit_*``."""

from __future__ import annotations

import threading

#: The self-telemetry counters and their help texts; labels are given at ``add()``.
HELP = {
    "obskit_spans_exported": "Spans accepted by the trace exporter.",
    "obskit_export_errors": "Failed span exports, by signal and reason.",
    "obskit_dropped": "Telemetry dropped by obskit, by signal and reason.",
    "obskit_internal_errors": "Internal obskit errors (never raised into the app), by component.",
    "obskit_metric_overflow": "Observations sent to a metric's __overflow__ series.",
}

_lock = threading.Lock()
_values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}


def add(counter: str, /, amount: float = 1, **labels: str) -> None:
    """Add ``amount`` to ``counter`` with ``labels``."""
    key = (counter, tuple(sorted(labels.items())))
    with _lock:
        _values[key] = _values.get(key, 0) + amount


def snapshot() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every counter value, keyed by (metric, sorted labels)."""
    with _lock:
        return dict(_values)


def value(counter: str, /, **labels: str) -> float:
    """One counter's current value (0 if never counted)."""
    with _lock:
        return _values.get((counter, tuple(sorted(labels.items()))), 0)
