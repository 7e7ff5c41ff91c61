"""obskit's metrics: one CollectorRegistry, idempotent definitions, exemplars, a series cap.

The registry is obskit's own (never prometheus-client's global ``REGISTRY``) and
there is one per process, created on first use: a module may define
``ORDERS = obskit.counter(...)`` at import time, before ``init()``, and keep using
that object across re-initialisation. ``init()`` adjusts the defaults (series cap,
buckets) and the process/platform/GC collectors.

Every metric obskit hands out is a prometheus-client metric subclass with two
additions: ``labels()`` sends label sets beyond the cap to one ``__overflow__``
series, and a histogram's ``observe()`` attaches the current sampled span's
``trace_id``/``span_id`` as an OpenMetrics exemplar.

This module uses prometheus-client's public API only. What obskit needs to know about
a metric (its label names, a child's label values, a histogram's bucket bounds, the
label sets handed out) it keeps itself, from what it passed to the constructor and to
``labels()``. The hot paths (:func:`observe_trusted`, :func:`add_trusted`) go through
:mod:`obskit._fast.histogram`, which falls back to ``Histogram.observe``/``Gauge.inc``.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from opentelemetry.trace import Span, SpanContext, get_current_span
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from obskit._fast import histogram as _fast_histogram
from obskit._lifecycle import after_fork
from obskit._lifecycle import self_stats as _self_stats
from obskit._traces.ids import hex_ids
from obskit.exceptions import ConfigError

OVERFLOW = "__overflow__"
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
#: OpenMetrics limit on the combined length of exemplar label names and values.
EXEMPLAR_MAX_RUNES = 128
#: Longest label value kept; longer ones are cut, so hostile values cannot make a
#: series (or a scrape) megabytes long.
LABEL_VALUE_MAX = 1024

_log = logging.getLogger("obskit")
M = TypeVar("M", bound="_Guarded")


class _Guarded:
    """Mixin: what obskit keeps about a metric, and a cap on distinct label sets with one
    overflow series beyond it.

    prometheus-client makes each child with the parent's class and constructor
    arguments, so a child knows its label names (and a histogram child its buckets)
    from its own constructor; its label values are set by the parent's ``labels()``.
    """

    _obskit_cap = 0  # 0: unguarded (children, or metrics without labels)
    _obskit_warned = False
    #: The family name (``describe()``'s), found when first needed.
    _obskit_name: str | None = None
    #: The label names given to the constructor.
    _obskit_labelnames: tuple[str, ...] = ()
    #: A child's label values, set when ``labels()`` first hands it out; None on a
    #: parent, on a metric without labels and on a child obskit did not hand out.
    _obskit_values: tuple[str, ...] | None = None
    #: A parent's label sets handed out and not removed: what the cap counts.
    _obskit_series: dict[tuple[str, ...], None]

    def __init__(
        self, name: str, documentation: str, labelnames: Iterable[str] = (), *args: Any, **kw: Any
    ) -> None:
        labels = tuple(labelnames)
        self._obskit_labelnames = labels
        self._obskit_series = {}
        super().__init__(name, documentation, labels, *args, **kw)  # type: ignore[call-arg]

    def labels(self: Any, *values: object, **named: object) -> Any:
        values = tuple(map(_label_value, values))
        if named:
            named = {name: _label_value(value) for name, value in named.items()}
        series = self._obskit_series
        cap = self._obskit_cap
        if cap and len(series) >= cap:
            if named and not values:
                values = tuple(named.get(name, "") for name in self._obskit_labelnames)
                named = {}
            if values not in series:
                return self._overflow()
        child = MetricWrapperBase.labels(self, *values, **named)
        if child._obskit_values is None:  # new (prometheus-client checked the names)
            key = values if values or not named else tuple(map(named.get, self._obskit_labelnames))
            child._obskit_values = key
            series[key] = None
        return child

    def remove(self: Any, *values: Any) -> None:
        """prometheus-client's ``remove()``, for the label values as ``labels()`` keeps them."""
        values = tuple(map(_label_value, values))
        MetricWrapperBase.remove(self, *values)
        self._obskit_series.pop(values, None)

    if hasattr(MetricWrapperBase, "remove_by_labels"):  # (prometheus-client 0.24 and later)

        def remove_by_labels(self: Any, labels: dict[str, str]) -> None:
            """prometheus-client's ``remove_by_labels()``, for values as ``labels()`` keeps them."""
            if isinstance(labels, dict):
                labels = {name: _label_value(value) for name, value in labels.items()}
            MetricWrapperBase.remove_by_labels(self, labels)
            where = [(self._obskit_labelnames.index(k), v) for k, v in labels.items()]
            series = self._obskit_series
            for key in list(series):
                if all(key[index] == value for index, value in where):
                    series.pop(key, None)

    def clear(self: Any) -> None:
        """prometheus-client's ``clear()``: every label set removed."""
        MetricWrapperBase.clear(self)
        self._obskit_series.clear()

    def _overflow(self: Any) -> Any:
        name = self._obskit_name
        if name is None:
            name = self._obskit_name = self.describe()[0].name
        _self_stats.add("obskit_metric_overflow", metric=name)
        if not self._obskit_warned:
            self._obskit_warned = True
            _log.warning(
                "obskit: metric %s reached %d label sets; further ones go to the %s series",
                name,
                self._obskit_cap,
                OVERFLOW,
            )
        values = (OVERFLOW,) * len(self._obskit_labelnames)
        child = MetricWrapperBase.labels(self, *values)
        if child._obskit_values is None:
            child._obskit_values = values
            self._obskit_series[values] = None
        return child


def label_values(child: Any) -> tuple[str, ...]:
    """The label values ``labels()`` handed ``child`` out for: ``("__overflow__", ...)``
    for the overflow series; ``()`` for a metric without labels (or a child obskit's
    ``labels()`` did not make)."""
    values: tuple[str, ...] | None = child._obskit_values
    return values if values is not None else ()


def metric_name(metric: Any) -> str:
    """The family name of one of obskit's metrics (a counter's without ``_total``)."""
    name: str | None = metric._obskit_name
    if name is None:
        name = metric._obskit_name = metric.describe()[0].name
    return name


def _label_value(value: object) -> str:
    """A label value as text of at most LABEL_VALUE_MAX characters; a value whose
    ``str()`` raises is an internal error (raised in strict mode), recorded as a placeholder."""
    if type(value) is str and len(value) <= LABEL_VALUE_MAX:
        return value
    try:
        text = str(value)
    except Exception as error:
        from obskit._lifecycle import internal_errors as _internal_errors

        _internal_errors.report("metrics", error)
        return f"<unrepresentable {type(value).__name__}>"
    return text if len(text) <= LABEL_VALUE_MAX else text[:LABEL_VALUE_MAX]


class ObskitCounter(_Guarded, Counter):
    """A prometheus-client Counter with obskit's series cap."""


class ObskitGauge(_Guarded, Gauge):
    """A prometheus-client Gauge with obskit's series cap."""


def bucket_bounds(buckets: Iterable[float | str]) -> tuple[float, ...]:
    """A histogram's upper bounds as prometheus-client documents them: the buckets as
    floats, ``+Inf`` added if missing."""
    bounds = [float(bound) for bound in buckets]
    if bounds and bounds[-1] != math.inf:
        bounds.append(math.inf)
    return tuple(bounds)


class ObskitHistogram(_Guarded, Histogram):
    """A prometheus-client Histogram with the series cap and automatic trace exemplars."""

    #: The upper bounds of the buckets, ``+Inf`` last.
    _obskit_bounds: tuple[float, ...] = ()
    #: Per bucket, the key of its record in the worker's exemplar file (multiprocess
    #: mode), made on the bucket's first exemplar.
    _obskit_exemplar_keys: list[bytes | None] | None = None

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        *args: Any,
        buckets: Sequence[float | str] = Histogram.DEFAULT_BUCKETS,
        **kw: Any,
    ) -> None:
        buckets = tuple(buckets)
        self._obskit_bounds = bucket_bounds(buckets)
        super().__init__(name, documentation, labelnames, *args, buckets=buckets, **kw)

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        """Observe ``amount``; inside a sampled span, with its ids as the exemplar.

        An exemplar over the OpenMetrics size limit is dropped (and counted); the
        observation itself is always recorded.
        """
        if exemplar is None:
            exemplar = current_exemplar()
        elif not _exemplar_fits(exemplar):
            _self_stats.add("obskit_dropped", signal="exemplars", reason="too_long")
            exemplar = None
        else:  # the caller's own exemplar: prometheus-client checks its label names
            Histogram.observe(self, amount, exemplar)
            if self._obskit_values is not None or not self._obskit_labelnames:
                _keep_exemplar(self, amount, exemplar)
            return
        if self._obskit_values is None and self._obskit_labelnames:
            # A parent (prometheus-client says it is missing label values), or a child
            # obskit's labels() did not make: the public call decides.
            Histogram.observe(self, amount, exemplar)
            return
        observe_trusted(self, amount, exemplar)


#: ``Histogram.observe(child, amount, exemplar)`` for an observable child and an
#: exemplar obskit built (or None): the accelerator when it is on. (``@traced`` calls it
#: directly for an observation without exemplar.)
_histogram_observe: Callable[[Any, float, dict[str, str] | None], None] = _fast_histogram.observe

#: ``Gauge.inc(child, amount)`` on an observable child of a gauge not in ``mostrecent``
#: mode: the accelerator when it is on.
add_trusted: Callable[[Any, float], None] = _fast_histogram.add


def observe_trusted(child: ObskitHistogram, amount: float, exemplar: dict[str, str] | None) -> None:
    """Observe with an exemplar obskit built itself (known to fit): the hot path.

    ``child`` must be observable (a labelled child). In multiprocess mode
    prometheus-client drops exemplars, so the worker's exemplar store keeps it instead.
    """
    if _multiprocess_dir is None:
        _histogram_observe(child, amount, exemplar)
        return
    # prometheus-client's multiprocess values drop exemplars: don't hand it one to
    # validate and discard; the worker's exemplar store keeps it.
    _histogram_observe(child, amount, None)
    if exemplar is not None:
        _keep_exemplar(child, amount, exemplar)


def _keep_exemplar(child: Any, amount: float, exemplar: dict[str, str]) -> None:
    """In multiprocess mode, record the exemplar prometheus-client drops in the worker's
    store. A directory that does not take it (full, read-only, gone) drops it, counted in
    ``obskit_dropped_total{signal="exemplars", reason}``."""
    if _multiprocess_dir is None:
        return
    try:
        (_store_here or exemplar_store()).record(child, amount, exemplar)
    except OSError as error:
        from obskit._metrics import file_values, metric_files

        file_values.dropped(metric_files.reason_of(error), signal="exemplars")
    except Exception as error:
        from obskit._lifecycle import internal_errors as _internal_errors

        _internal_errors.report("exemplars", error)


def exemplar_of(span: Span | None) -> dict[str, str] | None:
    """``{trace_id, span_id}`` of ``span`` if it is valid and sampled, else None."""
    if span is None:
        return None
    context = span.get_span_context()
    if not context.trace_flags & 1:  # unsampled (or invalid): no hex text to make
        return None
    # The hex text is cached per span context: the span's log lines reuse it.
    return exemplar_from(hex_ids(context))


def exemplar_from(ids: tuple[SpanContext, str, str]) -> dict[str, str] | None:
    """The exemplar of a span context with its hex ids (:func:`obskit._traces.ids.hex_ids`):
    ``{trace_id, span_id}`` if the context is valid and sampled, else None."""
    context, trace_id, span_id = ids
    if context.trace_flags & 1 and context.is_valid:  # 1: TraceFlags.SAMPLED
        return {"trace_id": trace_id, "span_id": span_id}
    return None


def current_exemplar() -> dict[str, str] | None:
    """``{trace_id, span_id}`` of the current span if it is valid and sampled."""
    return exemplar_of(get_current_span())


def _exemplar_fits(exemplar: dict[str, str]) -> bool:
    try:
        return sum(len(str(k)) + len(str(v)) for k, v in exemplar.items()) <= EXEMPLAR_MAX_RUNES
    except Exception:
        return False


def _detect_multiprocess() -> str | None:
    """The multiprocess directory if prometheus-client was imported in multiprocess mode
    (its value class, chosen at import from ``PROMETHEUS_MULTIPROC_DIR``, is not the
    single-process ``MutexValue``).

    In that mode it also installs obskit's value class for every metric made from now on
    (before the store makes any): a full, read-only or vanished directory then never
    raises into the app nor kills it (see :mod:`obskit._metrics.file_values`)."""
    from prometheus_client import values

    if values.ValueClass is not values.MutexValue:
        # Only in multiprocess mode.
        from obskit._metrics import file_values
        from obskit._metrics.multiprocess import directory

        file_values.install()
        return directory()
    return None


_multiprocess_dir: str | None = None
_exemplar_stores: dict[int, Any] = {}
#: This process's store once looked up; forgotten in a forked child.
_store_here: Any = None
#: Until when (monotonic) this process does not try again to create its exemplar file,
#: and the error it got (a full, read-only or vanished directory).
_store_retry_at = 0.0
_store_error: OSError | None = None
#: Seconds between two attempts to create the exemplar file.
STORE_RETRY_INTERVAL = 1.0


def exemplar_store() -> Any:
    """This process's exemplar store (a new one after a fork).

    Raises:
        OSError: the file cannot be created (the same error again, without a new
            attempt, for ``STORE_RETRY_INTERVAL`` seconds).
    """
    global _store_here, _store_retry_at, _store_error
    pid = os.getpid()
    store_ = _exemplar_stores.get(pid)
    if store_ is None:
        from obskit._metrics.multiprocess import EXEMPLAR_SUFFIX, ExemplarStore

        if _store_error is not None and time.monotonic() < _store_retry_at:
            raise _store_error
        assert _multiprocess_dir is not None
        path = os.path.join(_multiprocess_dir, f"exemplars_{pid}{EXEMPLAR_SUFFIX}")
        try:
            store_ = _exemplar_stores[pid] = ExemplarStore(path)
        except OSError as error:
            _store_error, _store_retry_at = error, time.monotonic() + STORE_RETRY_INTERVAL
            raise
        _store_error = None
    _store_here = store_
    return store_


def _forget_store_in_child() -> None:
    global _store_here, _store_error
    _store_here = None
    _store_error = None


@after_fork.in_child
def _renew_locks() -> None:
    """The store's locks (another thread may have held one at fork), and no exemplar
    store: the child writes its own file."""
    global _store_lock
    _forget_store_in_child()
    _store_lock = threading.Lock()
    if _store is not None:
        _store.renew_locks()
    for exemplars in _exemplar_stores.values():
        exemplars.renew_lock()


after_fork.register()  # (an app may fork after using metrics, before any init())


_FAST_PATH_HELP = "1 if the accelerator is on, 0 if its public-API path serves (see obskit doctor)."


class _SelfCollector(Collector):
    """Exposes obskit's own counters (``_self_stats``) as ``obskit_*_total``."""

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        grouped: dict[str, list[tuple[tuple[tuple[str, str], ...], float]]] = {}
        for (metric, labels), amount in sorted(_self_stats.snapshot().items()):
            grouped.setdefault(metric, []).append((labels, amount))
        for metric, help_text in _self_stats.HELP.items():
            rows = grouped.get(metric, [])
            names = sorted({name for labels, _ in rows for name, _ in labels})
            family = CounterMetricFamily(metric, help_text, labels=names)
            for labels, amount in rows:
                values = dict(labels)
                family.add_metric([values.get(name, "") for name in names], amount)
            yield family
        if "obskit._fast.status" in sys.modules:  # (else init() never decided)
            from obskit._fast.status import statuses

            paths = GaugeMetricFamily("obskit_fast_path_enabled", _FAST_PATH_HELP, labels=["path"])
            for status in statuses():
                paths.add_metric([status.path], 1.0 if status.enabled else 0.0)
            yield paths


def _file_backed_counts() -> Callable[[str, float, dict[str, str]], None]:
    """A ``_self_stats`` mirror adding each count to a multiprocess-file-backed counter.

    The counters are in no registry (the multiprocess exposition reads their files) and
    are made on first count, so a process that counts nothing writes no file.
    """
    counters: dict[str, Counter] = {}

    def add(counter: str, amount: float, labels: dict[str, str]) -> None:
        names = _self_stats.LABELS[counter]
        metric = counters.get(counter)
        if metric is None:
            # One counter object per name (two would overwrite each other's file value);
            # _self_stats' lock is renewed after a fork.
            with _self_stats._lock:
                metric = counters.get(counter) or Counter(
                    counter, _self_stats.HELP[counter], labelnames=names, registry=None
                )
                counters[counter] = metric
        (metric.labels(*[labels.get(name, "") for name in names]) if names else metric).inc(amount)

    return add


class MetricStore:
    """The process's registry and the metrics defined in it, by name."""

    def __init__(self) -> None:
        global _multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        self.max_series = 2000
        self.buckets: tuple[float, ...] = DEFAULT_BUCKETS
        self._lock = threading.RLock()
        self._defined: dict[str, tuple[str, tuple[str, ...], Any]] = {}
        self._process_collectors: list[Collector] = []
        self._self_collector = _SelfCollector()
        self.registry.register(self._self_collector)
        #: The multiprocess directory when running under gunicorn's hooks, else None.
        self.multiprocess = _multiprocess_dir = _detect_multiprocess()
        self._exposition: CollectorRegistry | None = None
        self._fast_paths: Gauge | None = None
        # A scrape merges every worker's files: obskit's own counts must be in them too.
        _self_stats.mirror = _file_backed_counts() if self.multiprocess is not None else None

    def renew_locks(self) -> None:
        """In a forked child: a new lock (another thread may have held this one)."""
        self._lock = threading.RLock()

    def exposition(self) -> CollectorRegistry:
        """The registry a scrape reads: this one, or all workers merged in multiprocess mode."""
        if self.multiprocess is None:
            return self.registry
        if self._exposition is None:
            from obskit._metrics.multiprocess import exposition_registry

            self._exposition = exposition_registry(self.multiprocess)
        return self._exposition

    def define(
        self,
        kind: str,
        factory: Callable[..., M],
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        max_series: int | None,
        **extra: Any,
    ) -> M:
        """Return the metric ``name``: the existing one if the definition matches, else new."""
        labels = tuple(labelnames)
        key = name.removesuffix("_total") if kind == "counter" else name
        with self._lock:
            existing = self._defined.get(key)
            if existing is not None:
                old_kind, old_labels, metric = existing
                if (old_kind, old_labels) != (kind, labels):
                    raise ConfigError(
                        "metric",
                        name,
                        "argument",
                        f"already defined as a {old_kind} with labels {list(old_labels)}",
                        f"asked again as a {kind} with labels {list(labels)}",
                    )
                return metric  # type: ignore[no-any-return]
            try:
                metric = factory(
                    name, documentation, labelnames=labels, registry=self.registry, **extra
                )
            except ValueError as error:
                raise ConfigError("metric", name, "argument", str(error)) from None
            if labels:
                metric._obskit_cap = max_series or self.max_series
            self._defined[key] = (kind, labels, metric)
            return metric

    def forget(self, name: str) -> None:
        """Unregister ``name`` (obskit's own metrics, when their definition changes)."""
        with self._lock:
            entry = self._defined.pop(name, None)
            if entry is not None:
                self.registry.unregister(entry[2])

    def open_counter_file(self) -> None:
        """In multiprocess mode, make this process's counter file now, while the directory
        may still have room: it holds the drop counts from the start, so a directory
        that fills later still shows them to a scrape made by another process (the
        pod's metrics server). A failure is counted and logged, as any other write."""
        if self.multiprocess is not None and _self_stats.mirror is not None:
            _self_stats.mirror("obskit_dropped", 0.0, {"signal": "metrics", "reason": "dir_full"})

    def share_fast_paths(self) -> None:
        """In multiprocess mode, write each accelerator's state to this process's gauge
        file (``livemin``: a path shows 0 while any live worker has it off), so the
        pod's metrics server shows ``obskit_fast_path_enabled`` too."""
        if self.multiprocess is None or "obskit._fast.status" not in sys.modules:
            return
        from obskit._fast.status import statuses

        with self._lock:
            if self._fast_paths is None:
                self._fast_paths = Gauge(
                    "obskit_fast_path_enabled",
                    _FAST_PATH_HELP,
                    labelnames=["path"],
                    registry=None,
                    multiprocess_mode="livemin",
                )
            gauge = self._fast_paths
        for status in statuses():
            gauge.labels(status.path).set(1.0 if status.enabled else 0.0)

    def configure(self, max_series: int, buckets: tuple[float, ...], process: bool) -> None:
        """Apply ``init()``'s metric settings."""
        from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

        with self._lock:
            self.max_series = max_series
            self.buckets = buckets
            if self.multiprocess is not None:
                process = False  # per-process collectors make no sense merged across workers
            if process and not self._process_collectors:
                self._process_collectors = [
                    ProcessCollector(registry=self.registry),
                    PlatformCollector(registry=self.registry),
                    GCCollector(registry=self.registry),
                ]
            elif not process:
                for collector in self._process_collectors:
                    self.registry.unregister(collector)
                self._process_collectors = []


_store: MetricStore | None = None
_store_lock = threading.Lock()


def store() -> MetricStore:
    """The process's metric store, created on first use."""
    global _store
    if _store is None:
        with _store_lock:
            if _store is None:
                _store = MetricStore()
    return _store


def reset_for_tests() -> None:
    """Drop the store (and every metric in it). Only for test isolation."""
    global _store
    with _store_lock:
        _store = None


FUNCTION_HISTOGRAM = "obskit_function_duration_seconds"


def function_histogram(metrics: MetricStore) -> ObskitHistogram:
    """``obskit_function_duration_seconds{function, outcome}`` with the current buckets.

    Re-created (same name) when ``init()`` changed the buckets since it was made.
    """
    histogram = metrics.define(
        "histogram",
        ObskitHistogram,
        FUNCTION_HISTOGRAM,
        "Duration of calls to @obskit.traced functions.",
        ("function", "outcome"),
        None,
        buckets=metrics.buckets,
    )
    if histogram._obskit_bounds[:-1] != metrics.buckets:
        metrics.forget(FUNCTION_HISTOGRAM)
        histogram = function_histogram(metrics)
    return histogram
