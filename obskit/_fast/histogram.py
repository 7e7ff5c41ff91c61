"""Observing a histogram child and moving a gauge child without prometheus-client's per-call checks.

Two entry points, each the public call it stands for when the accelerator is off:

- :func:`observe` is ``Histogram.observe(child, amount, exemplar)``;
- :func:`add` is ``Gauge.inc(child, amount)``.

The accelerator (registered as ``histogram``): callers pass an observable child (a
labelled child, or a metric without labels), a gauge not in ``mostrecent`` mode, and an
exemplar obskit built itself (valid label names, within the OpenMetrics size limit), so
the checks prometheus-client repeats on every call can go. For single-process values
(``MutexValue``) the value's own ``inc``/``set_exemplar`` are inlined: each "take the
lock, change one field" is done here, and a bucket's count and exemplar change under
one acquisition of its lock. Other values (multiprocess mode) get their ``inc``/
``set_exemplar`` called.

That relies on prometheus-client's private layout: a histogram child's ``_sum``,
``_buckets`` and ``_upper_bounds``, a gauge child's ``_value``, ``MutexValue``'s
``_lock``/``_value``/``_exemplar`` and ``Exemplar`` being a 3-field NamedTuple. The
check verifies that layout once, at ``init()``: the methods mirrored here read the
names they read in the versions this was written for, and (single-process) a probe
histogram and gauge changed both ways hold the same values and exemplars. In
multiprocess mode the probe is skipped (a probe metric would write to the workers'
files, and every scrape would show it): the name checks decide alone.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable
from types import FunctionType
from typing import Any

from prometheus_client import Gauge, Histogram, values
from prometheus_client.samples import Exemplar
from prometheus_client.values import MutexValue

from obskit._fast import status

__all__ = ["add", "observe"]

#: Whether the accelerator is on (set by :func:`_apply` when ``init()`` decides).
_on = False

_now = time.time
_bisect = bisect.bisect_left
_tuple_new = tuple.__new__
#: The public calls the entry points stand for (the base classes' own methods: obskit's
#: subclasses route their ``observe`` here).
_public_observe = Histogram.observe
_public_inc = Gauge.inc


def observe(child: Any, amount: float, exemplar: dict[str, str] | None) -> None:
    """``Histogram.observe(child, amount, exemplar)``, for an observable ``child`` and an
    exemplar obskit built (or None)."""
    if _on:
        total = child._sum
        buckets = child._buckets
        if type(total) is MutexValue:  # single-process values: no calls
            # acquire/try/finally rather than `with`: the same, ~1,000 instructions less.
            lock = total._lock
            lock.acquire()
            try:
                total._value += amount
            finally:
                lock.release()
            bounds = child._upper_bounds
            # The first bucket with amount <= bound (the last bound is +Inf); NaN fits none.
            i = _bisect(bounds, amount)
            if i < len(bounds) and amount <= bounds[i]:
                bucket = buckets[i]
                # The count and its exemplar under one acquisition of the lock.
                recorded = None
                if exemplar:
                    # Exemplar is the NamedTuple (labels, value, timestamp): tuple.__new__
                    # makes the same object as its generated __new__, one Python call less.
                    recorded = _tuple_new(Exemplar, (exemplar, amount, _now()))
                lock = bucket._lock
                lock.acquire()
                try:
                    bucket._value += 1
                    if recorded is not None:
                        bucket._exemplar = recorded
                finally:
                    lock.release()
            return
        total.inc(amount)
        for i, bound in enumerate(child._upper_bounds):
            if amount <= bound:
                buckets[i].inc(1)
                if exemplar:
                    buckets[i].set_exemplar(Exemplar(exemplar, amount, _now()))
                break
        return
    _public_observe(child, amount, exemplar)


def add(child: Any, amount: float) -> None:
    """``Gauge.inc(child, amount)``, for an observable child of a non-``mostrecent`` gauge."""
    if _on:
        value = child._value
        if type(value) is MutexValue:
            lock = value._lock
            lock.acquire()  # not `with`: see observe()
            try:
                value._value += amount
            finally:
                lock.release()
            return
        value.inc(amount)
        return
    _public_inc(child, amount)


# --- the check ------------------------------------------------------------------------

#: The names prometheus-client's methods read in the versions mirrored above; any other
#: set means the layout may have changed.
_OBSERVE_NAMES = frozenset(
    {
        "_raise_if_not_observable",
        "_sum",
        "inc",
        "enumerate",
        "_upper_bounds",
        "_buckets",
        "_validate_exemplar",
        "set_exemplar",
        "Exemplar",
        "time",
    }
)
_GAUGE_INC_NAMES = frozenset({"_raise_if_not_observable", "_value", "inc"})
_GAUGE_INC_OPTIONAL = frozenset({"_is_most_recent", "RuntimeError"})
_MUTEX_NAMES = {"inc": ("_lock", "_value"), "set_exemplar": ("_lock", "_exemplar")}
#: Values the probe observes: bucket edges, between, below, above, +-Inf, NaN, -0.0.
_PROBE_VALUES = (0.5, 0.2, 1.0, 1.0000001, 3.0, -1.0, -0.0, math.inf, -math.inf, math.nan, 2.5)


def _layout_reason() -> str | None:
    """Why the installed prometheus-client's names differ from the mirrored ones, or None."""
    names = set(_public_observe.__code__.co_names)
    if names != _OBSERVE_NAMES:
        return (
            "prometheus-client's Histogram.observe is not the one mirrored "
            f"(it reads {sorted(names)})"
        )
    names = set(_public_inc.__code__.co_names)
    if not _GAUGE_INC_NAMES <= names <= _GAUGE_INC_NAMES | _GAUGE_INC_OPTIONAL:
        return f"prometheus-client's Gauge.inc is not the one mirrored (it reads {sorted(names)})"
    for method, expected in _MUTEX_NAMES.items():
        found = getattr(MutexValue, method).__code__.co_names
        if found != expected:
            return f"prometheus-client's MutexValue.{method} reads {found}, not {expected}"
    if getattr(Exemplar, "_fields", None) != ("labels", "value", "timestamp"):
        return "prometheus-client's Exemplar is not the NamedTuple (labels, value, timestamp)"
    return None


def _samples(metric: Any) -> list[tuple[Any, ...]]:
    """A metric's samples as comparable tuples (NaN as text; ``_created`` left out; an
    exemplar as its labels, value, and whether its timestamp is now)."""
    found = []
    for sample in metric.collect()[0].samples:
        if sample.name.endswith("_created"):
            continue
        exemplar = sample.exemplar
        if exemplar is not None:
            recent = abs(float(exemplar.timestamp or 0) - time.time()) < 60
            exemplar = (exemplar.labels, repr(exemplar.value), recent)
        found.append((sample.name, sample.labels, repr(sample.value), exemplar))
    return found


def _probe_reason() -> str | None:
    """Why a probe histogram and gauge changed through the accelerator differ from ones
    changed through the public calls, or None."""
    # The very code of the entry points, run with the accelerator on for this call
    # only: the module's flag stays as it is for every other caller meanwhile.
    scope = {**globals(), "_on": True}
    fast_observe = FunctionType(observe.__code__, scope, "observe")
    fast_add = FunctionType(add.__code__, scope, "add")
    made = []
    for _ in range(2):
        histogram = Histogram(
            "obskit_probe_seconds", "Probe.", ["k"], registry=None, buckets=(0.5, 1.0, 2.5)
        )
        gauge = Gauge("obskit_probe", "Probe.", ["k"], registry=None)
        made.append((histogram, histogram.labels("x"), gauge, gauge.labels("x")))
    (fast, fast_child, fast_gauge, fast_gauge_child) = made[0]
    (public, public_child, public_gauge, public_gauge_child) = made[1]
    if type(fast_child._sum) is not MutexValue:
        return "prometheus-client's single-process histogram does not keep MutexValue values"
    for n, amount in enumerate(_PROBE_VALUES):
        exemplar = {"trace_id": f"{n:032x}", "span_id": f"{n:016x}"} if n % 2 else None
        fast_observe(fast_child, amount, exemplar)
        _public_observe(public_child, amount, exemplar)
        fast_add(fast_gauge_child, amount if amount == amount else 1.5)
        _public_inc(public_gauge_child, amount if amount == amount else 1.5)
    if _samples(fast) != _samples(public):
        return "a probe histogram observed through the accelerator differs from Histogram.observe"
    if _samples(fast_gauge) != _samples(public_gauge):
        return "a probe gauge moved through the accelerator differs from Gauge.inc"
    return None


def layout_then_probe(
    layout_reason: Callable[[], str | None], probe_reason: Callable[[], str | None]
) -> str | None:
    """A prometheus-client accelerator's check: its layout, then (in single-process mode
    only: a probe metric would be written into the workers' files) a probe both ways."""
    reason = layout_reason()
    if reason is not None or values.ValueClass is not MutexValue:
        return reason
    return probe_reason()


def _check() -> str | None:
    return layout_then_probe(_layout_reason, _probe_reason)


def _apply(on: bool) -> None:
    global _on
    _on = on


status.register("histogram", _check, _apply)
