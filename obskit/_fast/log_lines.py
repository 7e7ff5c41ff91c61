"""Log lines rendered without structlog's generic machinery, when the chain is obskit's own.

Two accelerators, each with its own status:

``log_lines``
    An obskit :class:`~obskit._logs.pipeline.Logger` whose processors are the shared
    pipeline's JSON chain, unchanged since ``init()``, has its line rendered by
    :func:`_render`: the chain's processors inlined, on the event dict built the way
    structlog's ``BoundLoggerBase._process_event`` builds it (the bound context, then
    the call's key/values, then ``event``). Knowing that takes a logger's private
    ``_processors`` and ``_context`` and that construction order; the check verifies
    both on a probe logger and renders probe lines both ways. Off, or for any other
    chain, :func:`write` runs the chain through ``_process_event`` (documented for
    custom wrapper classes), which serves the same line.

``bound_context``
    structlog keeps every context variable ``bind_contextvars`` creates in the private
    registry ``structlog.contextvars._CONTEXT_VARS``. Reading it answers "is anything
    bound?" without copying the context (:func:`nothing_bound`), lets a line skip
    ``merge_contextvars`` when nothing is (:func:`merge_bound`), and clears a request's
    leftovers without a copy either (:func:`clear_bound_fields`). Off, these are
    ``get_contextvars()``, ``merge_contextvars`` and ``clear_contextvars()``.

Contract modules use only the entry points: :func:`write`, :func:`renders_plain`,
:func:`merge_bound`, :func:`nothing_bound` and :func:`clear_bound_fields`.
"""

from __future__ import annotations

import contextvars
import re
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry import trace
from opentelemetry.trace import get_current_span

from obskit._fast import status
from obskit._logs.json_render import render_json
from obskit._logs.processors import METHODS, add_exception_fields, utc_now_iso
from obskit._traces.ids import hex_ids

if TYPE_CHECKING:
    from obskit._logs.pipeline import Logger, Pipeline

__all__ = ["clear_bound_fields", "merge_bound", "nothing_bound", "renders_plain", "write"]

_merge = structlog.contextvars.merge_contextvars
_get_contextvars = structlog.contextvars.get_contextvars
_clear_contextvars = structlog.contextvars.clear_contextvars
_DropEvent = structlog.DropEvent

#: structlog's registry of the variables ``bind_contextvars`` made, while
#: ``bound_context`` is on (None: off).
_bound: dict[str, contextvars.ContextVar[Any]] | None = None
#: Whether ``log_lines`` is on.
_inline = False


# --- bound_context ------------------------------------------------------------------


def nothing_bound() -> bool:
    """Whether no structlog context variable has a value in the current context."""
    bound = _bound
    if bound is None:
        return not _get_contextvars()
    if bound:  # (empty while nothing was ever bound in the process)
        for variable in tuple(bound.values()):  # tuple(): another thread may bind meanwhile
            if variable.get() is not Ellipsis:
                return False
    return True


def merge_bound(event: dict[str, Any]) -> None:
    """``merge_contextvars(None, "", event)``: bound fields not already in ``event``."""
    bound = _bound
    if bound is not None:
        if not bound:
            return
        for variable in tuple(bound.values()):
            if variable.get() is not Ellipsis:
                break
        else:
            return  # nothing bound: merging would only copy the whole context
    _merge(None, "", event)


def clear_bound_fields() -> None:
    """``structlog.contextvars.clear_contextvars()``: what a request's start calls so
    that fields bound by the previous request on this thread never leak into it.

    On, without copying the context, and only the variables that have a value (one
    that is not set reads as unset either way); nothing at all while nothing was ever
    bound in the process.
    """
    bound = _bound
    if bound is None:
        _clear_contextvars()
        return
    if bound:
        for variable in tuple(bound.values()):
            if variable.get() is not Ellipsis:
                variable.set(Ellipsis)


_PROBE_KEY = "obskit_fast_path_probe"


def _check_bound() -> str | None:
    registry = getattr(structlog.contextvars, "_CONTEXT_VARS", None)
    if not isinstance(registry, dict):
        return "structlog.contextvars has no _CONTEXT_VARS registry"
    name = structlog.contextvars.STRUCTLOG_KEY_PREFIX + _PROBE_KEY
    added = name not in registry
    try:
        # An empty context of its own: the probe never touches the caller's fields.
        return contextvars.Context().run(_probe_bound, registry, name)
    finally:
        if added:  # leave the registry as found: an empty one means "nothing ever bound"
            registry.pop(name, None)


def _probe_bound(registry: dict[str, Any], name: str) -> str | None:
    def unset() -> bool:
        return all(variable.get() is Ellipsis for variable in tuple(registry.values()))

    if not unset() or _get_contextvars():
        return "a fresh context already has structlog context variables"
    structlog.contextvars.bind_contextvars(**{_PROBE_KEY: 1})
    variable = registry.get(name)
    if not isinstance(variable, contextvars.ContextVar) or variable.get() != 1 or unset():
        return "bind_contextvars does not keep its variables in _CONTEXT_VARS"
    event: dict[str, Any] = {}
    _merge(None, "", event)
    if event != {_PROBE_KEY: 1}:
        return "merge_contextvars does not merge what bind_contextvars bound"
    structlog.contextvars.unbind_contextvars(_PROBE_KEY)
    if not unset() or _get_contextvars():
        return "unbind_contextvars does not leave its variable unset (Ellipsis)"
    structlog.contextvars.bind_contextvars(**{_PROBE_KEY: 2})
    for each in tuple(registry.values()):  # clear_bound_fields() while on
        if each.get() is not Ellipsis:
            each.set(Ellipsis)
    if _get_contextvars():
        return "unsetting the registry's variables does not clear the context"
    return None


def _apply_bound(on: bool) -> None:
    global _bound
    _bound = getattr(structlog.contextvars, "_CONTEXT_VARS", None) if on else None


# --- log_lines ----------------------------------------------------------------------


def write(logger: Logger, shared: Pipeline, method: str, text: str | None, kw: Any) -> Any:
    """Log one event of ``logger`` (obskit's bound logger): its chain, then its output.

    ``text``: the event (None for none), ``kw``: the call's key/values. The chain runs
    through ``_process_event`` (not ``_proxy_to_logger``, whose own keyword arguments
    would collide with a field named ``method_name``) unless ``log_lines`` is on and
    the chain is ``shared``'s JSON chain: then :func:`_render` writes the same line.
    """
    if _inline:
        snapshot = shared.structlog_snapshot
        chain = shared.structlog_chain
        if snapshot is not None and logger._processors is chain and chain == snapshot:
            output = logger._logger
            line = _render(shared, output, method, logger._context, text, kw)
            return getattr(output, method)(line)
    return _public_write(logger, method, text, kw)


def _public_write(logger: Logger, method: str, text: str | None, kw: Any) -> Any:
    try:
        args, kwargs = logger._process_event(method, text, kw)
    except _DropEvent:
        return None
    return getattr(logger._logger, method)(*args, **kwargs)


def renders_plain(logger: Logger, shared: Pipeline) -> bool:
    """Whether ``logger``'s next line is rendered here and no field is bound: then its
    bytes are :func:`_render`'s, which a caller may reproduce (the access line)."""
    if not _inline:
        return False
    snapshot = shared.structlog_snapshot
    chain = shared.structlog_chain
    if snapshot is None or logger._processors is not chain or chain != snapshot:
        return False
    bound = _bound
    if bound is None:
        return not _get_contextvars()
    if bound:
        for variable in tuple(bound.values()):
            if variable.get() is not Ellipsis:
                return False
    return True


def _render(
    shared: Pipeline, output: Any, method: str, context: Any, text: str | None, kw: Any
) -> str:
    """The JSON line ``shared.structlog_chain`` renders, its processors inlined.

    Same fields, same order, same values: the event dict as ``_process_event`` builds
    it, then ``merge_contextvars``, ``add_level``, ``add_logger_name``,
    ``add_timestamp``, ``add_trace_context``, the configured fields, the stack and
    the exception, and the JSON renderer.
    """
    event = context.copy()
    event.update(kw)
    if text is not None:
        event["event"] = text
    bound = _bound
    if bound is None:
        _merge(None, method, event)
    elif bound:
        for variable in tuple(bound.values()):
            if variable.get() is not Ellipsis:
                _merge(None, method, event)  # copies the whole context: only when needed
                break
    event["level"] = METHODS.get(method, method)
    name = getattr(output, "name", None)
    if name is not None and "logger" not in event:
        event["logger"] = name
    event["timestamp"] = utc_now_iso()
    span_context = get_current_span().get_span_context()
    if span_context.is_valid:
        _, event["trace_id"], event["span_id"] = hex_ids(span_context)
    for key, value in shared.fields.items():
        event.setdefault(key, value)
    if "stack_info" in event:
        event = shared.stack_renderer(output, method, event)
    if "exc_info" in event:
        event = add_exception_fields(output, method, event)
    return render_json(event, shared.max_bytes)


#: A line's timestamp: the one value two renderings at different instants differ in.
_TIMESTAMP = re.compile(r'"timestamp": "[^"]*"')


class _Output:
    """A probe logger's output: collects lines, has a name (as structlog.get_logger's)."""

    def __init__(self) -> None:
        self.name = "obskit.probe.output"
        self.lines: list[str] = []

    def msg(self, line: str) -> None:
        self.lines.append(_TIMESTAMP.sub('"timestamp": "T"', line))

    debug = info = warning = warn = error = exception = critical = fatal = log = msg


def _probe_events(logger: Any, bound: Any, error: Exception) -> list[tuple[Any, str, Any, Any]]:
    """(logger, method, event, key/values): lines that show how the event dict is built
    (context, key/values, event) and what each processor adds or overrides."""
    return [
        (logger, "info", "plain", {}),
        (logger, "warning", "kw", {"items": 3, "level": "ignored", "logger": "override"}),
        (logger, "error", "collides", {"timestamp": "mine", "trace_id": "mine", "x": None}),
        (bound, "info", "bound", {"order": 8, "method_name": "m", "text": "caf\xe9 \u2603"}),
        (bound, "debug", None, {"only": "kw", "nested": {"a": [1, 2.5, None]}}),
        (logger, "info", "big", {"blob": "x" * 2000}),  # over the probe's cap: truncated
        (logger, "info", "stack", {"stack_info": True}),
        (logger, "exception", "failed", {"exc_info": True}),
        (bound, "error", "failed again", {"exc_info": error}),
    ]


#: The pipeline probe lines are rendered with (never written: each goes to an _Output).
_probe_pipeline: Pipeline | None = None


def _check_lines() -> str | None:
    from obskit._logs import pipeline as _pipeline  # it imports this module

    global _probe_pipeline
    if _probe_pipeline is None:  # one per process (a pipeline's writer registers at fork)
        _probe_pipeline = _pipeline.Pipeline()
    shared = _probe_pipeline
    shared.configure(fields={"service.name": "probe"}, renderer="json", max_bytes=1024)
    output = _Output()
    logger = _pipeline.Logger(output, shared.structlog_chain, {"logger": "obskit.probe"})
    bound = logger.bind(order=1)
    for each in (logger, bound):
        if getattr(each, "_processors", None) is not shared.structlog_chain:
            return "a structlog bound logger no longer keeps its processors in _processors"
        if getattr(each, "_logger", None) is not output:
            return "a structlog bound logger no longer keeps its output in _logger"
        context = getattr(each, "_context", None)
        if type(context) is not dict or context is not structlog.get_context(each):
            return "a structlog bound logger no longer keeps its context in _context"
    if bound._context != {"logger": "obskit.probe", "order": 1}:
        return "BoundLoggerBase.bind() no longer extends the context"
    # In an empty context of its own: no bound field, no span of the caller's.
    public, inlined = contextvars.Context().run(_probe_lines, shared, output, logger, bound)
    if len(public) != 2 * len(_probe_events(logger, bound, ValueError())):
        return f"structlog's chain wrote {len(public)} probe lines"
    for public_line, inline_line in zip(public, inlined, strict=True):
        if public_line != inline_line:
            return f"a probe line differs: structlog's {public_line!r}, inlined {inline_line!r}"
    return None


def _probe_lines(
    shared: Pipeline, output: _Output, logger: Any, bound: Any
) -> tuple[list[str], list[str]]:
    """Each probe event rendered through structlog's chain and inlined, in a span and not."""
    public: list[str] = []
    inlined: list[str] = []
    span = trace.NonRecordingSpan(trace.SpanContext(0xABC, 0x12, False))
    try:
        raise ValueError("probe \u2603")
    except ValueError as error:  # exc_info=True: the exception being handled
        for current in (span, trace.INVALID_SPAN):
            with trace.use_span(current):
                for each, method, text, kw in _probe_events(logger, bound, error):
                    _public_write(each, method, text, dict(kw))
                    public.extend(output.lines)
                    output.lines.clear()
                    line = _render(shared, output, method, each._context, text, dict(kw))
                    getattr(output, method)(line)
                    inlined.extend(output.lines)
                    output.lines.clear()
    return public, inlined


def _apply_lines(on: bool) -> None:
    global _inline
    _inline = on


status.register("bound_context", _check_bound, _apply_bound)
status.register("log_lines", _check_lines, _apply_lines)
