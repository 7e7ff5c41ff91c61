"""obskit's own counters (exported spans, errors, drops, overflows), kept without
prometheus-client so any module can count; ``_metrics`` exposes them as ``obskit_*``.

In multiprocess mode (gunicorn) a scrape is answered by one worker, so ``_metrics``
installs a *mirror* that also adds every amount to a prometheus-client counter backed
by the worker's multiprocess file: the scrape then sums every worker's counts.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from obskit._lifecycle import after_fork

#: The self-telemetry counters and their help texts; labels are given at ``add()``.
HELP = {
    "obskit_spans_exported": "Spans accepted by the trace exporter.",
    "obskit_export_errors": "Failed span exports, by signal and reason.",
    "obskit_dropped": "Telemetry dropped by obskit, by signal and reason.",
    "obskit_internal_errors": "Internal obskit errors (never raised into the app), by component.",
    "obskit_metric_overflow": "Observations sent to a metric's __overflow__ series.",
    "obskit_profiler_samples": "Thread stacks sampled by the profiler.",
    "obskit_profiler_overflow_samples": "Profiler samples whose stack was not kept (the"
    " distinct stack limit was reached): counted under one 'other stacks' frame.",
    "obskit_profiler_seconds": "CPU seconds used by the profiler's sampling thread.",
    "obskit_profiler_exports": "Profiles written or sent, by destination and outcome.",
}

#: The label names of each counter, in exposition order.
LABELS: dict[str, tuple[str, ...]] = {
    "obskit_spans_exported": (),
    "obskit_export_errors": ("signal", "reason"),
    "obskit_dropped": ("signal", "reason"),
    "obskit_internal_errors": ("component",),
    "obskit_metric_overflow": ("metric",),
    "obskit_profiler_samples": (),
    "obskit_profiler_overflow_samples": (),
    "obskit_profiler_seconds": (),
    "obskit_profiler_exports": ("destination", "outcome"),
}

#: Called with (counter, amount, labels) after each ``add()``; set in multiprocess mode.
mirror: Callable[[str, float, dict[str, str]], None] | None = None

_lock = threading.Lock()


@after_fork.in_child
def _renew_lock() -> None:
    global _lock
    _lock = threading.Lock()


_values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}


def add(counter: str, /, amount: float = 1, **labels: str) -> None:
    """Add ``amount`` to ``counter`` with ``labels``."""
    key = (counter, tuple(sorted(labels.items())))
    with _lock:
        _values[key] = _values.get(key, 0) + amount
    forward = mirror
    if forward is not None:
        with contextlib.suppress(Exception):  # counting never fails; the local value is kept
            forward(counter, amount, labels)


def snapshot() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every counter value, keyed by (metric, sorted labels)."""
    with _lock:
        return dict(_values)


def value(counter: str, /, **labels: str) -> float:
    """One counter's current value (0 if never counted)."""
    with _lock:
        return _values.get((counter, tuple(sorted(labels.items()))), 0)
