"""A fast ``/metrics`` rendering, byte-identical to prometheus-client's encoders.

prometheus-client builds a ``Sample`` (a dict of labels) per line and escapes and
formats every label at every scrape. For counters, gauges and histograms in a plain
``CollectorRegistry`` (single process), :func:`render` instead keeps each series' rendered
label text (its label values never change; a removed series takes its text with it) and
reads the values directly. Every other family (custom collectors, the process
collectors, obskit's own ``obskit_*`` counters, the multiprocess merge) and every case
the fast path does not cover (``dots`` name escaping, non-legacy names, a gauge with
``set_function``, a restricted registry) is rendered by prometheus-client's own encoder,
so the output is always what prometheus-client would produce.

Entry points: :func:`render` (``generate_latest`` of either format) and
:func:`encoder_for` (the fast rendering that does what an encoder chosen by
prometheus-client's ``choose_encoder`` does).

The accelerator (registered as ``exposition``) relies on prometheus-client's private
layout: a registry's ``_collector_to_names``/``_lock``/``_target_info``, a metric's
``_metrics``/``_labelnames``/``_get_metric``/``_is_parent``, each value's ``_value``/
``_exemplar``, ``_use_created``, and how ``choose_encoder`` builds its answer. The check
verifies it once, at ``init()``: the methods mirrored here read the names they read in
the versions this was written for, and (single process) a probe registry renders to the
bytes prometheus-client's encoders give, in both formats. Off, :func:`render` is
prometheus-client's ``generate_latest`` and :func:`encoder_for` returns the encoder it is
given.
"""

from __future__ import annotations

import functools
import inspect
import re
import weakref
from collections.abc import Callable, Iterable
from itertools import accumulate, chain, compress, repeat
from operator import attrgetter, methodcaller
from types import FunctionType
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import exposition as _text
from prometheus_client import metrics as _client_metrics
from prometheus_client import utils as _utils
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.openmetrics import exposition as _om
from prometheus_client.values import MutexValue

from obskit._fast import status
from obskit._fast.histogram import layout_then_probe

__all__ = ["UNDERSCORES", "encoder_for", "render"]

UNDERSCORES = "underscores"

#: Whether the accelerator is on (set by :func:`_apply` when ``init()`` decides).
_on = False

_upstream_text: Any = _text.generate_latest
_upstream_om: Any = _om.generate_latest
floatToGoString: Any = _utils.floatToGoString


def _parameters(function: Any) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(function).parameters)
    except (TypeError, ValueError):  # pragma: no cover - a plain Python function here
        return frozenset()


#: The keywords each encoder takes: ``escaping`` (and OpenMetrics' ``version``) exist
#: only from prometheus-client 0.23.1; before, every scrape is ``underscores``/1.0.0.
_TEXT_KEYWORDS = _parameters(_upstream_text) & {"escaping"}
_OM_KEYWORDS = _parameters(_upstream_om) & {"escaping", "version"}


def _upstream_bytes(registry: Any, openmetrics: bool, escaping: str, version: str) -> bytes:
    """prometheus-client's ``generate_latest`` of the format, with the keywords it takes."""
    if openmetrics:
        keywords = {"escaping": escaping, "version": version}
        return bytes(_upstream_om(registry, **{k: keywords[k] for k in _OM_KEYWORDS}))
    if _TEXT_KEYWORDS:
        return bytes(_upstream_text(registry, escaping=escaping))
    return bytes(_upstream_text(registry))


# --- the fast rendering -----------------------------------------------------------------

#: Escapings under which a name of :data:`_NAME` characters is written unchanged: not
#: ``dots``, and in OpenMetrics not ``values`` (which prefixes each sample name).
_PLAIN_ESCAPINGS = {False: frozenset({"underscores", "values", "allow-utf-8"})}
_PLAIN_ESCAPINGS[True] = frozenset({"underscores", "allow-utf-8"})
#: Names the fast path writes (no ``:``, which OpenMetrics' sample escaping replaces).
_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

#: The prometheus-client methods the fast path mirrors, and their names as read here:
#: a different prometheus-client turns the accelerator off (everything goes upstream).
_MIRRORED = {
    MetricWrapperBase.collect: ("_get_metric", "_samples", "add_sample", "_name"),
    MetricWrapperBase._multi_samples: ("_lock", "_metrics", "copy", "items", "list", "zip"),
    Counter._child_samples: ("Sample", "_value", "get", "get_exemplar", "_use_created"),
    Gauge._child_samples: ("Sample", "_value", "get"),
    Histogram._child_samples: ("enumerate", "_upper_bounds", "_buckets", "get", "Sample"),
}
_KINDS: dict[type, str] = {Counter: "counter", Gauge: "gauge", Histogram: "histogram"}


def _kind(collector: object) -> str | None:
    """``counter``/``gauge``/``histogram`` if the fast path can render ``collector``."""
    cls = type(collector)
    for base, kind in _KINDS.items():
        if not isinstance(collector, base):
            continue
        for method in ("collect", "_samples", "_multi_samples", "_child_samples", "_get_metric"):
            if getattr(cls, method) is not getattr(base, method):
                return None
        return kind
    return None


class _Texts(dict[Any, str]):
    """``floatToGoString`` by value, memoised (bounded). Only for values that are never
    ``-0.0`` (which equals ``0.0`` as a key): bucket counts, sums and counter totals,
    built by adding to ``0.0``."""

    def __missing__(self, value: Any) -> str:
        text: str = floatToGoString(value)
        if len(self) < 4096 and value == value:  # NaN never matches itself: not kept
            self[value] = text
        return text


_texts = _Texts()
#: ``MutexValue`` (single-process values) keeps its value and exemplar in these
#: attributes (read under its lock by ``get()``; one attribute read is atomic here).
_DIRECT = MutexValue.get.__code__.co_names == (
    "_lock",
    "_value",
) and MutexValue.get_exemplar.__code__.co_names == ("_lock", "_exemplar")
_read = attrgetter("_value")
_read_exemplar = attrgetter("_exemplar")
_get = methodcaller("get")
_get_exemplar = methodcaller("get_exemplar")
_formatted: dict[float, str] = {}


def _go(value: Any) -> str:
    """``floatToGoString(value)``, memoised for positive floats (gauge values)."""
    text = _formatted.get(value) if type(value) is float and value > 0 else None
    if text is None:
        text = floatToGoString(value)
        if type(value) is float and value > 0 and len(_formatted) < 4096:
            _formatted[value] = text
    return text


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _exemplar(exemplar: Any) -> str:
    """prometheus-client's OpenMetrics exemplar suffix (`` # {labels} value [timestamp]``)."""
    labels = ",".join(f'{k}="{_label_value(v)}"' for k, v in sorted(exemplar.labels.items()))
    if exemplar.timestamp is not None:
        return f" # {{{labels}}} {floatToGoString(exemplar.value)} {exemplar.timestamp}"
    return f" # {{{labels}}} {floatToGoString(exemplar.value)}"


_bounds: dict[tuple[float, ...], tuple[str, ...]] = {}


def _les(bounds: list[float]) -> tuple[str, ...]:
    """The ``le="..."`` labels of ``bounds`` (shared by every child with those buckets)."""
    key = tuple(bounds)
    les = _bounds.get(key)
    if les is None:
        les = tuple(f'le="{floatToGoString(bound)}"' for bound in bounds)
        if len(_bounds) < 256:
            _bounds[key] = les
    return les


def _prefixes(child: Any, name: str, kind: str, pairs: list[tuple[str, str]]) -> Any:
    """The text around each of a child's values (``name{labels} ``)."""
    items = sorted(dict(pairs).items())  # as prometheus-client: a dict, sorted by name
    parts = [(key, f'{key}="{_label_value(value)}"') for key, value in items]
    labels = ",".join(part for _, part in parts)
    braced = f"{{{labels}}} " if labels else " "
    if kind == "counter":
        made: Any = (f"{name}_total{braced}", f"{name}_created{braced}")
    elif kind == "gauge":
        made = f"{name}{braced}"
    else:
        # "le" joins the child's labels in sorted position, as prometheus-client sorts them.
        # Kept per child: the text before and after ``le="..."`` (the ``le`` texts are shared).
        head = "".join(part + "," for key, part in parts if key < "le")
        tail = "".join("," + part for key, part in parts if key > "le")
        made = (
            f"{name}_bucket{{{head}",
            f"{tail}}} ",
            f"{name}_count{braced}",
            f"{name}_sum{braced}",
            f"{name}_created{braced}",
            [None] * len(child._upper_bounds),  # per bucket: (exemplar, its text), the last one
        )
    return made


def _exemplar_text(seen: list[Any], index: int, exemplar: Any) -> str:
    """``_exemplar(exemplar)``, reused while a bucket keeps the same exemplar object."""
    last = seen[index]
    if last is not None and last[0] is exemplar:
        return str(last[1])
    text = _exemplar(exemplar)
    seen[index] = (exemplar, text)
    return text


#: Per metric: (its name, {label values: (child, the child's texts)}). Held by obskit,
#: keyed weakly by the metric: a metric that goes away takes its texts with it.
_caches: weakref.WeakKeyDictionary[Any, tuple[str, dict[tuple[str, ...], tuple[Any, Any]]]]
_caches = weakref.WeakKeyDictionary()


def cached_label_sets(metric: Any) -> set[tuple[str, ...]]:
    """The label sets whose texts are cached for ``metric`` (for tests)."""
    cached = _caches.get(metric)
    return set(cached[1]) if cached is not None else set()


def _children(metric: Any, name: str, kind: str) -> list[tuple[Any, Any]] | None:
    """(child, its texts) for each series, or None if one has its own ``_child_samples``.

    The texts are cached per metric by label values (a child's never change); an entry
    is remade when its child was replaced, and entries of removed children are dropped.
    """
    if metric._is_parent():
        with metric._lock:
            children = metric._metrics.copy()
    else:
        children = {(): metric}
    cached = _caches.get(metric)
    if cached is None or cached[0] != name:
        cached = _caches[metric] = (name, {})
    texts = cached[1]
    found = []
    names = metric._labelnames
    gauge = kind == "gauge"
    for label_values, child in children.items():
        if gauge and "_child_samples" in child.__dict__:  # Gauge.set_function
            return None
        entry = texts.get(label_values)
        if entry is None or entry[0] is not child:
            pairs = list(zip(names, label_values, strict=False))
            entry = texts[label_values] = (child, _prefixes(child, name, kind, pairs))
        found.append(entry)
    if len(texts) > len(children):
        _caches[metric] = (name, {key: texts[key] for key in children})
    return found


def _render_fast(metric: Any, kind: str, openmetrics: bool, out: list[str]) -> bool:
    """Append ``metric``'s family to ``out`` as prometheus-client would; False if it cannot."""
    family = metric._get_metric()
    name = family.name
    if not _NAME.fullmatch(name) or not all(_NAME.fullmatch(label) for label in metric._labelnames):
        return False
    children = _children(metric, name, kind)
    if children is None:
        return False
    use_created = _client_metrics._use_created
    doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
    lines: list[str] = []
    created: list[str] = []
    go = _go
    if kind == "counter":
        for child, (total, created_prefix) in children:
            value = child._value
            line = total + _texts[value.get()]
            if openmetrics:
                exemplar = value.get_exemplar()
                lines.append(f"{line}{_exemplar(exemplar)}\n" if exemplar else line + "\n")
                if use_created:
                    lines.append(created_prefix + floatToGoString(child._created) + "\n")
            else:
                lines.append(line + "\n")
                if use_created:
                    created.append(created_prefix + floatToGoString(child._created) + "\n")
        text_name = name + "_total"
    elif kind == "gauge":
        for child, prefix in children:
            lines.append(prefix + go(child._value.get()) + "\n")
        text_name = name
    else:
        texts = _texts
        newlines = repeat("\n")
        for child, (start, end, count, total, created_prefix, seen) in children:
            buckets = child._buckets
            direct = type(child._sum) is MutexValue and _DIRECT
            # Cumulative counts as prometheus-client adds them (0.0 + b0, + b1, ...), read
            # and formatted by C-level iteration: no Python call per bucket.
            counts = list(accumulate(map(_read if direct else _get, buckets), initial=0.0))
            del counts[0]
            rendered = list(map(texts.__getitem__, counts))
            if openmetrics:
                exemplars = list(map(_read_exemplar if direct else _get_exemplar, buckets))
                if any(exemplars):
                    for index in compress(range(len(exemplars)), exemplars):
                        rendered[index] += _exemplar_text(seen, index, exemplars[index])
            # start le="..." end value\n, per bucket: joined by C-level iteration.
            parts = zip(repeat(start), _les(child._upper_bounds), repeat(end), rendered, newlines)
            lines.append("".join(chain.from_iterable(parts)))
            lines.append(count + texts[counts[-1]] + "\n")
            if child._upper_bounds[0] >= 0:
                lines.append(total + texts[child._sum.get()] + "\n")
            if use_created:
                line = created_prefix + floatToGoString(child._created) + "\n"
                (lines if openmetrics else created).append(line)
        text_name = name
    if openmetrics:
        om_doc = doc.replace('"', r"\"")
        out.append(f"# HELP {name} {om_doc}\n# TYPE {name} {kind}\n")
        if family.unit:
            out.append(f"# UNIT {name} {family.unit}\n")
        out.extend(lines)
        return True
    out.append(f"# HELP {text_name} {doc}\n# TYPE {text_name} {kind}\n")
    out.extend(lines)
    if created:
        out.append(f"# HELP {name}_created {doc}\n# TYPE {name}_created gauge\n")
        out.extend(created)
    return True


def _fast_or_false(metric: Any, kind: str, openmetrics: bool, out: list[str]) -> bool:
    """:func:`_render_fast`, False on any surprise (``out`` is only extended on success):
    prometheus-client's encoder then renders the family, or raises as it would."""
    try:
        return _render_fast(metric, kind, openmetrics, out)
    except Exception:
        return False


class _Families:
    """A collector yielding given families: prometheus-client's encoder for a part."""

    def __init__(self, families: Iterable[Any]) -> None:
        self._families = families

    def collect(self) -> Iterable[Any]:
        return self._families


def _upstream_part(families: Iterable[Any], openmetrics: bool, escaping: str, version: str) -> str:
    """``families`` as prometheus-client's encoder renders them (OpenMetrics without EOF)."""
    text = _upstream_bytes(_Families(families), openmetrics, escaping, version).decode("utf-8")
    return text[: -len("# EOF\n")] if openmetrics else text


def render(
    registry: Any, openmetrics: bool, escaping: str = UNDERSCORES, version: str = "1.0.0"
) -> bytes:
    """``registry`` in the text format (or OpenMetrics), as prometheus-client renders it."""
    if (
        not _on
        or type(registry) is not CollectorRegistry
        or escaping not in _PLAIN_ESCAPINGS[openmetrics]
    ):
        return _upstream_bytes(registry, openmetrics, escaping, version)
    with registry._lock:
        collectors = list(registry._collector_to_names)
        target_info: Any = registry._target_info_metric() if registry._target_info else None  # type: ignore[no-untyped-call]
    out: list[str] = []
    if target_info is not None:
        out.append(_upstream_part([target_info], openmetrics, escaping, version))
    for collector in collectors:
        kind = _kind(collector)
        if kind is None or not _fast_or_false(collector, kind, openmetrics, out):
            families = list(collector.collect())
            if families:
                out.append(_upstream_part(families, openmetrics, escaping, version))
    if openmetrics:
        out.append("# EOF\n")
    return "".join(out).encode("utf-8")


def encoder_for(encoder: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """The fast rendering doing what ``encoder`` (chosen by prometheus-client's
    ``choose_encoder``) does, or ``encoder`` itself (the accelerator off, or an encoder
    this module does not know)."""
    if not _on:
        return encoder
    if encoder is _upstream_text:
        return functools.partial(render, openmetrics=False)
    if encoder is _upstream_om:  # (prometheus-client before 0.23.1: no keywords)
        return functools.partial(render, openmetrics=True)
    if isinstance(encoder, functools.partial) and not encoder.args:
        keywords = dict(encoder.keywords)
        if encoder.func is _upstream_text and set(keywords) <= {"escaping"}:
            return functools.partial(render, openmetrics=False, **keywords)
        if encoder.func is _upstream_om and set(keywords) <= {"escaping", "version"}:
            return functools.partial(render, openmetrics=True, **keywords)
    return encoder


# --- the check ------------------------------------------------------------------------


def _layout_reason() -> str | None:
    for function, names in _MIRRORED.items():
        found = set(function.__code__.co_names)
        if not set(names) <= found:
            return (
                f"prometheus-client's {function.__qualname__} no longer reads "
                f"{sorted(set(names) - found)}"
            )
    probe = CollectorRegistry()
    for name in ("_collector_to_names", "_lock", "_target_info", "_target_info_metric"):
        if not hasattr(probe, name):
            return f"prometheus-client's CollectorRegistry has no {name}"
    if not hasattr(_client_metrics, "_use_created"):
        return "prometheus-client's metrics module has no _use_created"
    return None


#: Label values the probe renders: quotes, backslashes, newlines, unicode, empty, ``le``.
_PROBE_LABELS = ('say "hi"', "back\\slash", "new\nline", "ünï ✓ 日本", "", "le")


def _probe_reason() -> str | None:
    """Why a probe registry rendered by the accelerator differs from prometheus-client's
    encoders, or None."""
    # The very code of render(), run with the accelerator on for this call only.
    fast_render = FunctionType(render.__code__, {**globals(), "_on": True}, "render")
    registry = CollectorRegistry(target_info={"service": "probe"})
    doc = 'Probe "help", back\\slash and new\nline.'
    counter = Counter("obskit_probe", doc, ["zone", "a"], registry=registry)
    gauge = Gauge("obskit_probe_depth", doc, ["q"], registry=registry)
    histogram = Histogram("obskit_probe_seconds", doc, ["zone", "a"], registry=registry)
    Histogram("obskit_probe_free_seconds", doc, registry=registry, buckets=(-1, 0, 1)).observe(-2)
    for n, value in enumerate(_PROBE_LABELS):
        exemplar = {"trace_id": f"{n:032x}"} if n % 2 else None
        counter.labels(value, "x").inc(n, exemplar)
        gauge.labels(value).set(n * -0.5)
        histogram.labels(value, "x").observe(0.02 * n, exemplar)
    for openmetrics in (False, True):
        for _ in range(2):  # the second time from the cached texts
            fast = fast_render(registry, openmetrics, UNDERSCORES, "1.0.0")
            if fast != _upstream_bytes(registry, openmetrics, UNDERSCORES, "1.0.0"):
                form = "OpenMetrics" if openmetrics else "text"
                return f"a probe registry renders differently from prometheus-client's {form}"
    return None


def _check() -> str | None:
    return layout_then_probe(_layout_reason, _probe_reason)


def _apply(on: bool) -> None:
    global _on
    _on = on


status.register("exposition", _check, _apply)
