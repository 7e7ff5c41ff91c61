"""Starting and ending obskit's own spans without the SDK's per-call generality.

obskit builds and owns its ``TracerProvider`` (see ``_tracing``), so for the
configurations it builds it knows ahead of time what ``Tracer.start_span``
recomputes on every call: which sampler runs and what it decides from the parent
alone, that ids come from obskit's OS-random id source, that the tracer's self-metrics
are off, which span processors have a no-op ``on_start``/``_on_ending``, and —
for ``@traced`` — that the constant ``code.*`` attributes are already valid.

:class:`FastTracer` builds the very same SDK span object (``sdk.trace._Span``,
same fields, same attribute container, same processors called with the same
arguments) from that precomputed state. It is only used when every precondition
holds, checked once per tracer (sampler kind, id generator, self-metrics, field
layout verified against a span the SDK constructor builds) and cheaply per call
(sampler and tracer config unchanged, processors known); otherwise
:func:`fast_tracer` returns ``None`` / :meth:`FastTracer.start` returns ``None`` and
the caller uses ``tracer.start_span``. ``tests/fast/test_spans.py`` compares spans
made both ways, field by field and as encoded OTLP protobuf.

The accelerator is registered as ``spans``: its check (the SDK's private names import,
the span and context layouts match, a probe span built both ways is identical) runs
once at ``init()``. While it is off every entry point here makes the SDK's public
calls (``tracer.start_span``, ``span.end()``, ``context.attach`` ...), which serve the
same spans. Contract modules use only the entry points: :class:`SpanStarter` (for
``@traced``/``span()``), :func:`start_span`, :func:`attribute_limits`,
:func:`identity`, :func:`finish_span`, :func:`end_span`, :func:`with_span`,
:func:`attach` and :func:`detach`.
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.trace import (
    DEFAULT_TRACE_STATE,
    INVALID_SPAN,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    TraceFlags,
    get_current_span,
    set_span_in_context,
)

try:  # private SDK names: any change upstream disables the fast path, never obskit
    from opentelemetry.attributes import BoundedAttributes
    from opentelemetry.sdk.trace import (
        ReadableSpan,
        SpanProcessor,
        SynchronousMultiSpanProcessor,
        Tracer,
        _Span,
    )
    from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
    from opentelemetry.sdk.trace._tracer_metrics import noop as _sdk_noop
    from opentelemetry.sdk.trace.sampling import (
        ALWAYS_OFF,
        ALWAYS_ON,
        ParentBased,
        StaticSampler,
        TraceIdRatioBased,
    )
    from opentelemetry.sdk.util import BoundedList

    _AVAILABLE = True
    _import_error = ""
except ImportError as missing:  # pragma: no cover - depends on the installed SDK
    _AVAILABLE = False
    _import_error = str(missing)

try:  # the span's slot in the context, and the contextvar OpenTelemetry keeps it in
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
    from opentelemetry.trace.propagation import _SPAN_KEY

    _RUNTIME = otel_context._RUNTIME_CONTEXT
    _VAR: Any = _RUNTIME._current_context if type(_RUNTIME) is ContextVarsRuntimeContext else None
except (ImportError, AttributeError):  # pragma: no cover - depends on the installed API
    _VAR = None

from obskit._fast import status
from obskit._fast.ids import SPAN_CONTEXT_IS_TUPLE, flags_and_validity, hex_ids
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._traces.ids import OsRandomIdGenerator
from obskit._traces.ids import new_span_id as _new_span_id
from obskit._traces.ids import new_trace_id as _new_trace_id

__all__ = [
    "FastTracer",
    "SpanStarter",
    "attach",
    "attribute_limits",
    "detach",
    "end_span",
    "fast_tracer",
    "finish_span",
    "identity",
    "plain_fit",
    "plain_values",
    "start_span",
    "trusted_attributes",
    "with_span",
]

#: Whether the accelerator is on (set by :func:`_apply` when ``init()`` decides).
_on = False

_new = object.__new__
_time_ns = time.time_ns
_Lock = threading.Lock
_tuple_new = tuple.__new__
_dict_set = dict.__setitem__
_current_span = get_current_span
_sdk_log = logging.getLogger("opentelemetry.sdk.trace")
_context_log = logging.getLogger("opentelemetry.context")
_TRACE_ID_LIMIT = (1 << 64) - 1
_NO_LIMIT = sys.maxsize  #: a string length limit that never applies
_RANDOM = TraceFlags.RANDOM_TRACE_ID if hasattr(TraceFlags, "RANDOM_TRACE_ID") else 0
#: Trace flags of a new span, indexed by [sampled][random trace id].
_FLAGS = (
    (TraceFlags(TraceFlags.DEFAULT), TraceFlags(TraceFlags.DEFAULT | _RANDOM)),
    (TraceFlags(TraceFlags.SAMPLED), TraceFlags(TraceFlags.SAMPLED | _RANDOM)),
)
_SPAN_TYPES = frozenset([_Span, NonRecordingSpan] if _AVAILABLE else [NonRecordingSpan])
_QUIET: tuple[frozenset[Any], frozenset[Any]] | None = None


def _quiet() -> tuple[frozenset[Any], frozenset[Any]]:
    """The no-op ``on_start`` and ``_on_ending`` methods of the SDK's processors.

    Found when first needed: importing the export module at ``init()`` costs an
    app that exports nothing (and it is loaded by then if a processor is in use).
    """
    global _QUIET
    if _QUIET is None:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        kinds = (SpanProcessor, BatchSpanProcessor, SimpleSpanProcessor)
        _QUIET = (
            frozenset(kind.on_start for kind in kinds),
            frozenset(kind._on_ending for kind in kinds),
        )
    return _QUIET


def _default_status() -> Any:
    """The ``Status`` object a new SDK span starts with (a shared default argument)."""
    return inspect.signature(ReadableSpan.__init__).parameters["status"].default


def _root_bound(sampler: Any) -> int | None:
    """For a sampler deciding on the trace id alone: sample iff ``id & LIMIT < bound``."""
    if sampler is ALWAYS_ON:
        return _TRACE_ID_LIMIT + 1
    if sampler is ALWAYS_OFF:
        return 0
    if type(sampler) is TraceIdRatioBased:
        return int(sampler.bound)
    return None


def _sampling(sampler: Any) -> tuple[bool, int] | None:
    """(parent-based, root bound) for the samplers obskit builds, else None."""
    if type(sampler) is ParentBased:
        default = (
            sampler._remote_parent_sampled is ALWAYS_ON
            and sampler._remote_parent_not_sampled is ALWAYS_OFF
            and sampler._local_parent_sampled is ALWAYS_ON
            and sampler._local_parent_not_sampled is ALWAYS_OFF
        )
        bound = _root_bound(sampler._root)
        return (True, bound) if default and bound is not None else None
    if type(sampler) in (StaticSampler, TraceIdRatioBased):
        bound = _root_bound(sampler)
        return None if bound is None else (False, bound)
    return None


def _clean(value: Any, limit: int | None) -> tuple[bool, Any]:
    """(ok, cleaned): the value the SDK would store, if it would store it *silently*."""
    if value is None or isinstance(value, (bool, int, float, bytes)):
        return True, value
    if isinstance(value, str):
        return (limit is None or len(value) <= limit), value
    if isinstance(value, Sequence):
        items = [_clean(item, limit) for item in value]
        return all(ok for ok, _ in items), tuple(item for _, item in items)
    return False, None  # mappings, other types: the SDK warns or converts; let it


def trusted_attributes(tracer: Any, attributes: Mapping[str, Any]) -> dict[str, Any] | None:
    """``attributes`` as the SDK would store them on ``tracer``'s spans, or None.

    None when the SDK would drop, truncate or convert any of them with a warning:
    then per-call validation (and its log lines) must stay. Always None while the
    accelerator is off.
    """
    return _trusted(tracer, attributes) if _on else None


def _trusted(tracer: Any, attributes: Mapping[str, Any]) -> dict[str, Any] | None:
    limits = tracer._span_limits
    maxlen = limits.max_span_attributes
    if maxlen is not None and len(attributes) > maxlen:
        return None
    cleaned: dict[str, Any] = {}
    for key, value in attributes.items():
        if not key or not isinstance(key, str):
            return None
        ok, cleaned[key] = _clean(value, limits.max_span_attribute_length)
        if not ok:
            return None
    return cleaned


def plain_fit(tracer: Any, attributes: Mapping[str, Any]) -> bool:
    """Whether the SDK would store ``attributes`` (``str``/``int`` values) exactly as
    given on ``tracer``'s spans: within the count and length limits.

    The cheap per-call form of :func:`trusted_attributes` for attributes obskit builds
    from plain values (an HTTP request's): True means they may be passed as trusted.
    The keys are obskit's own attribute names: that they are strings is not checked.
    False while the accelerator is off.
    """
    if not _on:
        return False
    limits = tracer._span_limits
    maxlen = limits.max_span_attributes
    if maxlen is not None and len(attributes) > maxlen:
        return False
    return plain_values(attributes, limits.max_span_attribute_length)


def plain_values(attributes: Mapping[str, Any], limit: int | None) -> bool:
    """``str`` values of at most ``limit`` characters or ``int``s (``bool`` is not one),
    and no empty key (public API only). For attributes obskit names: that keys are
    strings is not checked.
    """
    if "" in attributes:
        return False  # the SDK drops it with a warning
    longest = _NO_LIMIT if limit is None else limit
    for value in attributes.values():
        kind = type(value)
        if kind is str:
            if len(value) > longest:
                return False
        elif kind is not int:
            return False
    return True


#: Whether BoundedAttributes stores an item as ``_setitem_locked`` (under its lock)
#: after cleaning it: then a clean value can be stored by that step alone.
_SETITEM_LOCKED = _AVAILABLE and hasattr(BoundedAttributes, "_setitem_locked")
#: The SDK span methods :func:`rename_and_set` stands for; if something wraps them
#: later (another instrumentation, a test's fault), the calls go to the wrapper.
_SDK_METHODS = (_Span.update_name, _Span.set_attribute) if _AVAILABLE else ()


def rename_and_set(
    span: Any, name: str | None, attributes: Mapping[str, Any], end: bool = False
) -> bool:
    """``span.update_name(name)`` (unless None), then ``span.set_attribute(key, value)``
    for each plain attribute, without the SDK's per-call cleaning of values that need none;
    with ``end``, then :func:`end_span` too, under the same acquisition of the span's lock.

    Returns False, having done nothing, unless ``span`` is a live SDK span and every
    value is a ``str`` within the length limit or an ``int`` (and, with ``end``, a span
    :func:`end_span` ends itself): the caller then makes the SDK calls (which also warn
    about an ended span, as before).
    """
    if (
        not _on
        or not _SETITEM_LOCKED
        or type(span) is not _Span
        or (_Span.update_name, _Span.set_attribute) != _SDK_METHODS
        or (end and span.__dict__.get("_record_end_metrics") is not _sdk_noop)
    ):
        return False
    bounded = span._attributes
    if type(bounded) is not BoundedAttributes or getattr(bounded, "_immutable", False):
        return False
    if bounded.maxlen == 0 or not plain_values(attributes, bounded.max_value_len):
        return False
    # acquire/try/finally rather than `with`: the same, ~1,000 instructions less per lock.
    span_lock = span._lock
    span_lock.acquire()
    try:
        if span._end_time is not None or (end and span._start_time is None):
            return False
        if name is not None:
            span._name = name
        lock = bounded._lock
        lock.acquire()
        try:
            stored = bounded._dict
            maxlen = bounded.maxlen
            if (
                maxlen is None or len(stored) + len(attributes) <= maxlen
            ) and stored.keys().isdisjoint(attributes):
                stored.update(attributes)  # all new, all fit: what each _setitem_locked does
            else:
                for key, value in attributes.items():
                    bounded._setitem_locked(key, value)
        finally:
            lock.release()
        if end:
            span._end_time = _time_ns()
            bounded._immutable = True
    finally:
        span_lock.release()
    if end:
        _hand_over(span)
    return True


def _detach_var(token: Any) -> None:
    """``opentelemetry.context.detach(token)``, directly for a token of the contextvar."""
    try:
        _VAR.reset(token)
    except ValueError:  # a token of another variable: the runtime context was replaced
        otel_context.detach(token)  # (which logs, as before, if that fails too)
    except Exception:
        _context_log.exception("Failed to detach context")


def detach(token: Any) -> None:
    """Restore the context a :meth:`SpanStarter.open` or :func:`attach` token replaced."""
    if _on and _VAR is not None:
        _detach_var(token)
    else:
        otel_context.detach(token)


def with_span(context: Context, span: Span) -> Context:
    """``trace.set_span_in_context(span, context)``: a copy of ``context`` holding ``span``."""
    if not _on:
        return set_span_in_context(span, context)
    if not context:
        return Context({_SPAN_KEY: span})  # the same, for an empty context, in one step
    copied = Context(context)  # Context refuses item assignment itself
    _dict_set(copied, _SPAN_KEY, span)
    return copied


def attach(context: Context) -> Any:
    """``opentelemetry.context.attach(context)``; the token is for :func:`detach`."""
    if _on and _VAR is not None and otel_context._RUNTIME_CONTEXT is _RUNTIME:
        return _VAR.set(context)
    return otel_context.attach(context)


#: (span processors tuple, all their on_start no-op, all their _on_ending no-op),
#: for the processors tuple seen last (a provider's tuple is replaced, never mutated).
_known: tuple[Any, bool, bool] = ((), True, True)


def _learn(processors: Any) -> tuple[Any, bool, bool]:
    global _known
    quiet_start, quiet_ending = _quiet() if processors else (frozenset(), frozenset())
    known = (
        processors,
        all(type(p).on_start in quiet_start for p in processors),
        all(type(p)._on_ending in quiet_ending for p in processors),
    )
    _known = known
    return known


def end_span(span: Any) -> None:
    """End ``span`` as ``span.end()`` would; any span, fast-path-made or not.

    For spans the fast path made (or the SDK made with its self-metrics off) it skips
    the work nothing observes: processors' no-op ``_on_ending`` and, with no processor
    at all, building the ``ReadableSpan`` handed to them.
    """
    if type(span) is NonRecordingSpan:
        return  # its end() does nothing
    if (
        not _on
        or type(span) is not _Span
        or span.__dict__.get("_record_end_metrics") is not _sdk_noop
    ):
        span.end()
        return
    lock = span._lock
    lock.acquire()  # not `with`: see rename_and_set
    try:
        if span._start_time is None:
            raise RuntimeError("Calling end() on a not started span.")
        if span._end_time is not None:
            _sdk_log.warning("Calling end() on an ended span.")
            return
        span._end_time = _time_ns()
        bounded: Any = span._attributes
        bounded._immutable = True
    finally:
        lock.release()
    _hand_over(span)


def _hand_over(span: Any) -> None:
    """What ``span.end()`` does after setting the end time: the span processors' part."""
    multi = span._span_processor
    if type(multi) is not SynchronousMultiSpanProcessor:
        multi._on_ending(span)
        multi.on_end(span._readable_span())
        return
    processors = multi._span_processors
    if not processors:
        return  # no one to hand the finished span to: skip building it
    known = _known
    if known[0] is not processors:
        known = _learn(processors)
    if not known[2]:
        multi._on_ending(span)
    multi.on_end(span._readable_span())


class FastTracer:
    """Starts and ends SDK spans for one SDK ``Tracer`` from precomputed state."""

    __slots__ = (
        "_bound",
        "_empty_events",
        "_empty_links",
        "_id_generator",
        "_parent_based",
        "_random_root",
        "_sampler",
        "_template",
        "tracer",
    )

    def __init__(self, tracer: Any, parent_based: bool, bound: int) -> None:
        self.tracer = tracer
        self._sampler = tracer.sampler
        self._parent_based = parent_based
        self._bound = bound
        #: None for obskit's OsRandomIdGenerator (its functions called directly), else the
        #: tracer's own generator (``obskit.testing``'s sequential ids, a user's).
        generator = tracer.id_generator
        self._id_generator = None if type(generator) is OsRandomIdGenerator else generator
        random_root = getattr(generator, "is_trace_id_random", None)  # (newer SDKs)
        self._random_root = random_root is not None and bool(random_root())
        limits = tracer._span_limits
        # Empty deques with the limits as maxlen: a span's copies them (cheaper than new ones).
        self._empty_events: deque[Any] = deque((), limits.max_events)  # noqa: RUF037
        self._empty_links: deque[Any] = deque((), limits.max_links)  # noqa: RUF037
        # The fields every span of this tracer starts with (ReadableSpan, then Span).
        self._template: dict[str, Any] = {
            "_name": "",
            "_context": None,
            "_kind": SpanKind.INTERNAL,
            "_instrumentation_info": tracer.instrumentation_info,
            "_instrumentation_scope": tracer._instrumentation_scope,
            "_parent": None,
            "_start_time": None,
            "_end_time": None,
            "_attributes": None,
            "_events": (),
            "_links": (),
            "_resource": tracer.resource,
            "_status": _default_status(),
            "_sampler": self._sampler,
            "_trace_config": None,
            "_record_exception": True,
            "_set_status_on_exception": True,
            "_span_processor": tracer.span_processor,
            "_limits": limits,
            "_lock": None,
            "_record_end_metrics": _sdk_noop,
        }

    def _build(
        self,
        name: str,
        span_context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Any,
        trusted: bool,
    ) -> Any:
        """A new, not yet started ``_Span`` with exactly the fields the SDK gives it."""
        tracer = self.tracer
        limits = tracer._span_limits
        span = _new(_Span)
        fields = span.__dict__
        fields.update(self._template)
        fields["_name"] = name
        fields["_context"] = span_context
        fields["_kind"] = kind
        fields["_parent"] = parent
        fields["_resource"] = tracer.resource  # replaced after a fork
        fields["_lock"] = _Lock()
        if trusted:
            bounded: Any = _new(BoundedAttributes)
            bounded._dict = attributes.copy()
            bounded.maxlen = limits.max_span_attributes
            bounded.dropped = 0
            bounded.max_value_len = limits.max_span_attribute_length
            bounded._lock = _Lock()
            bounded._immutable = False
        else:
            bounded = BoundedAttributes(
                limits.max_span_attributes,
                attributes,
                immutable=False,
                max_value_len=limits.max_span_attribute_length,
            )
        fields["_attributes"] = bounded
        events: Any = _new(BoundedList)
        events.dropped = 0
        events._dq = self._empty_events.copy()
        events._lock = _Lock()
        fields["_events"] = events
        links: Any = _new(BoundedList)
        links.dropped = 0
        links._dq = self._empty_links.copy()
        links._lock = _Lock()
        fields["_links"] = links
        return span

    def start(
        self,
        name: str,
        attributes: Mapping[str, Any] | None = None,
        *,
        trusted: bool = False,
        kind: SpanKind = SpanKind.INTERNAL,
        context: otel_context.Context | None = None,
    ) -> Span | None:
        """Start a span as ``tracer.start_span(name, context, kind, attributes)`` would.

        ``trusted``: ``attributes`` came from :func:`trusted_attributes` for this
        tracer (stored without re-validation). Returns None when a per-call
        precondition fails: the caller then uses ``tracer.start_span``.
        """
        parent_span: Any
        if context is None:
            parent_span = _current_span()
        else:  # get_current_span(context), without its two calls
            parent_span = context.get(_SPAN_KEY)
            if parent_span is None or (
                type(parent_span) not in _SPAN_TYPES and not isinstance(parent_span, Span)
            ):
                parent_span = INVALID_SPAN
        return self._start(name, attributes, trusted, kind, context, parent_span)

    def start_current(
        self, name: str, attributes: Mapping[str, Any] | None, trusted: bool
    ) -> tuple[Span, Any] | None:
        """Start an INTERNAL span under the current one and make it current.

        Returns the span and a token for :func:`detach`, or None (as :meth:`start`).
        Equivalent to ``span = start(...); token = attach(set_span_in_context(span))``
        with the current context read once.
        """
        if _VAR is None or otel_context._RUNTIME_CONTEXT is not _RUNTIME:
            span = self.start(name, attributes, trusted=trusted)
            if span is None:
                return None
            return span, otel_context.attach(set_span_in_context(span))
        current = _VAR.get()
        parent_span = current.get(_SPAN_KEY)
        if parent_span is None or (
            type(parent_span) not in _SPAN_TYPES and not isinstance(parent_span, Span)
        ):
            parent_span = INVALID_SPAN
        span = self._start(name, attributes, trusted, SpanKind.INTERNAL, None, parent_span)
        if span is None:
            return None
        context = Context(current)  # a copy; Context refuses item assignment itself
        _dict_set(context, _SPAN_KEY, span)
        return span, _VAR.set(context)

    def _start(
        self,
        name: str,
        attributes: Mapping[str, Any] | None,
        trusted: bool,
        kind: SpanKind,
        context: otel_context.Context | None,
        parent_span: Any,
    ) -> Span | None:
        tracer = self.tracer
        if tracer.sampler is not self._sampler or not tracer._tracer_config.is_enabled:
            return None
        parent: Any = parent_span.get_span_context()
        generator = self._id_generator
        # A SpanContext is the tuple (trace_id, span_id, is_remote, flags, state, is_valid).
        if parent is not None and parent[5]:
            trace_id = parent[0]
            flags = parent[3]
            random_id = bool(flags & _RANDOM)
            if self._parent_based:
                sampled = bool(flags & 1)
            else:
                sampled = (trace_id & _TRACE_ID_LIMIT) < self._bound
            trace_state = parent[4]
        else:
            parent = None
            trace_id = _new_trace_id() if generator is None else generator.generate_trace_id()
            random_id = self._random_root
            sampled = (trace_id & _TRACE_ID_LIMIT) < self._bound
            trace_state = DEFAULT_TRACE_STATE
        span_id = _new_span_id() if generator is None else generator.generate_span_id()
        flags_out = _FLAGS[sampled][random_id]
        # SpanContext.__new__ only computes is_valid: both ids are non-zero and in range.
        span_context = _tuple_new(
            SpanContext, (trace_id, span_id, False, flags_out, trace_state, True)
        )
        if not sampled:
            dropped: Any = _new(NonRecordingSpan)
            dropped._context = span_context  # all NonRecordingSpan.__init__ does
            return dropped  # type: ignore[no-any-return]
        span = self._build(name, span_context, parent, kind, attributes, trusted)
        span._start_time = _time_ns()
        multi = tracer.span_processor
        known = _known
        processors = multi._span_processors
        if known[0] is not processors:
            known = _learn(processors)
        if not known[1]:
            multi.on_start(span, parent_context=context)
        return span  # type: ignore[no-any-return]

    end = staticmethod(end_span)


def start_span(
    tracer: Any,
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    context: otel_context.Context | None = None,
    attributes: Mapping[str, Any] | None = None,
    trusted: bool = False,
) -> Span:
    """``tracer.start_span(name, context, kind, attributes)``, by the fast path when it applies.

    The one entry point for obskit code that starts spans on obskit's tracer (for an
    HTTP server span: ``kind=SpanKind.SERVER, context=<extracted>``). Attributes are
    validated per call exactly as the SDK does, unless ``trusted``: ``str``/``int``
    values the caller checked against :func:`attribute_limits`. Pair with
    :func:`end_span` or :func:`finish_span`. Raises what ``tracer.start_span``
    raises: callers keep their own error guard.
    """
    fast = fast_tracer(tracer)
    if fast is not None:
        span = fast.start(name, attributes, trusted=trusted, kind=kind, context=context)
        if span is not None:
            return span
    started: Span = tracer.start_span(name, context=context, kind=kind, attributes=attributes)
    return started


def _verify(fast: FastTracer) -> bool:
    """Whether a span built by ``fast`` has exactly the fields the SDK constructor gives it."""
    tracer = fast.tracer
    limits = tracer._span_limits
    span_context = SpanContext(1, 2, False, _FLAGS[1][1])
    attributes: dict[str, Any] = {"code.function.name": "obskit.check", "code.line.number": 1}
    reference = _Span(
        name="obskit.check",
        context=span_context,
        parent=None,
        sampler=tracer.sampler,
        resource=tracer.resource,
        attributes=attributes,
        span_processor=tracer.span_processor,
        kind=SpanKind.INTERNAL,
        links=(),
        instrumentation_info=tracer.instrumentation_info,
        record_exception=True,
        set_status_on_exception=True,
        limits=limits,
        instrumentation_scope=tracer._instrumentation_scope,
        record_end_metrics=_sdk_noop,
    )
    trusted = _trusted(tracer, attributes)
    built = fast._build("obskit.check", span_context, None, SpanKind.INTERNAL, trusted, True)
    return _same(vars(reference), vars(built))


def _same(expected: dict[str, Any], actual: dict[str, Any]) -> bool:
    if expected.keys() != actual.keys():
        return False
    for key, value in expected.items():
        other = actual[key]
        if type(value) is not type(other):
            return False
        if isinstance(value, (BoundedAttributes, BoundedList)):
            if not _same(vars(value), vars(other)):
                return False
        elif isinstance(value, deque):
            if value.maxlen != other.maxlen or list(value) != list(other):
                return False
        elif key != "_lock" and value != other:
            return False
    return True


def _layouts_known() -> bool:
    """Whether SpanContext (see ``obskit._traces.ids``) and NonRecordingSpan are laid out as the
    fast path builds them."""
    span_context = SpanContext(5, 6, True, _FLAGS[1][0])
    probe: Any = _new(NonRecordingSpan)
    probe._context = span_context
    return SPAN_CONTEXT_IS_TUPLE and vars(probe) == vars(NonRecordingSpan(span_context))


_cache: tuple[Any, FastTracer | None] = (None, None)


def fast_tracer(tracer: Any) -> FastTracer | None:
    """The fast path for ``tracer`` (an SDK ``Tracer`` obskit made), or None if it cannot be
    (the accelerator is off, or this tracer's sampler, processors or self-metrics are not
    ones the fast path knows)."""
    global _cache
    if not _on:
        return None
    cached_tracer, cached = _cache
    if cached_tracer is tracer:
        return cached
    try:
        fast, _ = _make_fast(tracer)
    except Exception as error:  # an SDK we do not know: report it, use the SDK path
        _internal_errors.report("traced", error)
        fast = None
    _cache = (tracer, fast)
    return fast


def _make_fast(tracer: Any) -> tuple[FastTracer | None, str]:
    """A verified :class:`FastTracer` for ``tracer``, or None and the reason."""
    if not _AVAILABLE:
        return None, f"the SDK's private names did not import ({_import_error})"
    if type(tracer) is not Tracer:
        return None, f"the tracer is a {type(tracer).__name__}, not the SDK's Tracer"
    if not _layouts_known():
        return None, "SpanContext or NonRecordingSpan is laid out differently"
    if type(tracer._tracer_metrics) is not NoOpTracerMetrics:
        return None, "the SDK's tracer self-metrics are on"
    if type(tracer.span_processor) is not SynchronousMultiSpanProcessor:
        return None, "the span processor is not the SDK's SynchronousMultiSpanProcessor"
    sampling = _sampling(tracer.sampler)
    if sampling is None:
        return None, f"the sampler {tracer.sampler!r} is not one the fast path reproduces"
    candidate = FastTracer(tracer, *sampling)
    if not _verify(candidate):
        return None, "a span built by the fast path differs from the SDK's"
    return candidate, ""


def _check() -> str | None:
    """Whether this SDK builds the spans the fast path builds: one probe tracer, verified."""
    if not _AVAILABLE:
        return f"opentelemetry-sdk lacks the private names it builds on ({_import_error})"
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    # An explicit resource: the default one runs resource detectors (on a thread pool).
    provider = TracerProvider(
        sampler=ALWAYS_ON,
        resource=Resource({"service.name": "obskit.check"}),
        shutdown_on_exit=False,
    )
    try:
        _, reason = _make_fast(provider.get_tracer("obskit.check"))
    finally:
        provider.shutdown()
    return reason or None


def _apply(on: bool) -> None:
    global _on, _cache
    _on = on
    _cache = (None, None)


status.register("spans", _check, _apply)


# --- the entry points contract modules call -------------------------------------------


def attribute_limits(tracer: Any) -> tuple[int | None, int | None] | None:
    """(attribute count limit, value length limit) of ``tracer``'s spans, when the fast
    path can store pre-checked attributes on them; None while it cannot (then the
    attributes go through the SDK's own per-call validation)."""
    if fast_tracer(tracer) is None:
        return None
    limits = tracer._span_limits
    return limits.max_span_attributes, limits.max_span_attribute_length


def identity(span: Any) -> tuple[tuple[Any, str, str], int, bool]:
    """``(hex_ids(context), trace_flags, is_valid)`` of ``span``'s context."""
    # get_span_context(), read directly from the SDK's spans when on
    fast = _on and type(span) in _SPAN_TYPES
    context = span._context if fast else span.get_span_context()
    flags, valid = flags_and_validity(context)
    return hex_ids(context), flags, valid


def finish_span(span: Any, name: str | None, attributes: Mapping[str, Any]) -> None:
    """Rename ``span`` (unless ``name`` is None), set ``attributes`` and end it.

    Raises what the SDK's calls raise (a span processor's ``on_end``): the caller
    guards; if the span did not end, :func:`end_span` is still safe to call.
    """
    if rename_and_set(span, name, attributes, end=True):
        return
    if name is not None:
        span.update_name(name)
    for key, value in attributes.items():
        span.set_attribute(key, value)
    end_span(span)


class SpanStarter:
    """Starts one decorated function's spans on one tracer, and ends them.

    One call sequence for every ``@traced`` call and ``span()`` block: :meth:`open`
    (or :meth:`start` for a generator's steps), then :meth:`end`; the fast path when
    it applies to this tracer and these attributes, else the SDK's public calls.
    """

    __slots__ = ("attributes", "fast", "name", "skip_unsampled", "tracer", "trusted")

    def __init__(
        self,
        tracer: Any,
        name: str,
        attributes: Mapping[str, Any],
        skip_unsampled: bool,
        reused: bool = True,
    ) -> None:
        self.tracer = tracer
        self.name = name
        self.attributes = attributes
        #: The sampler is parent-based: a child of an unsampled parent is never recorded.
        self.skip_unsampled = skip_unsampled
        self.fast = fast_tracer(tracer)
        #: The attributes as the SDK stores them, pre-cleaned once for a starter that is
        #: ``reused`` (a decorated function's); None: validated per span, as the SDK does.
        self.trusted = _trusted(tracer, attributes) if reused and self.fast is not None else None

    def open(self) -> tuple[Span, Any]:
        """Start the span and make it current: ``(span, token for detach())``."""
        fast = self.fast
        if fast is not None:
            trusted = self.trusted
            opened = (
                fast.start_current(self.name, self.attributes, False)
                if trusted is None
                else fast.start_current(self.name, trusted, True)
            )
            if opened is not None:
                return opened
        span = self._public_start()
        return span, otel_context.attach(set_span_in_context(span))

    def start(self) -> Span:
        """Start the span under the current one, without making it current."""
        fast = self.fast
        if fast is not None:
            trusted = self.trusted
            span = (
                fast.start(self.name, self.attributes)
                if trusted is None
                else fast.start(self.name, trusted, trusted=True)
            )
            if span is not None:
                return span
        return self._public_start()

    def _public_start(self) -> Span:
        if self.skip_unsampled:
            parent = _current_span().get_span_context()
            if parent.is_valid and not parent.trace_flags.sampled:
                # A parent-based sampler drops every child of an unsampled parent:
                # skip the SDK's sampling machinery, keep fresh ids for log correlation.
                return NonRecordingSpan(
                    SpanContext(
                        parent.trace_id,
                        self._new_span_id(),
                        is_remote=False,
                        trace_flags=parent.trace_flags,
                        trace_state=parent.trace_state,
                    )
                )
        started: Span = self.tracer.start_span(self.name, attributes=self.attributes)
        return started

    def _new_span_id(self) -> int:
        generate = getattr(self.tracer, "id_generator", None)
        if generate is not None:
            return int(generate.generate_span_id())
        return _new_span_id()

    end = staticmethod(end_span)
